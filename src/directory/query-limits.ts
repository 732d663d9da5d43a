/**
 * Bounds on the shape of a user's query, checked on its text before any parser sees it. Parsers and
 * evaluators of nested syntax recurse: sparqljs takes time worse than quadratic in the nesting
 * (6,000 nested groups: 30 s), json-p3 overflows the stack on a few thousand `!`, and Oxigraph's
 * WebAssembly faults (`memory access out of bounds`, which takes its store down) past a few hundred
 * nested calls or EXISTS. One linear pass over the text measures the nesting of brackets, braces and
 * parentheses outside string literals, IRIs and comments, and the longest run of `!`; past a limit
 * the query is refused with a message naming it. Bounds on the parsed query (how deep and how large
 * its syntax tree is) are the query guard's (query-guard.ts).
 */

/** Deepest nesting of `{ ( [` a SPARQL query may have (the named queries use at most 8). */
export const MAX_SPARQL_NESTING = 64;
/** Deepest nesting of `[ (` a JSONPath query may have. */
export const MAX_JSONPATH_NESTING = 32;
/** Longest run of `!` (logical not) in a JSONPath filter; more than two never means more. */
export const MAX_JSONPATH_NOTS = 8;

/** What exceeds a limit, for the 400's detail; undefined when the text is within them all. */
export type LimitReport = string | undefined;

const OPENERS = new Set(["{", "(", "["]);
const CLOSERS = new Set(["}", ")", "]"]);

/** SPARQL 1.1 IRIREF (section 19.8): `<`, then no `<>"{}|^`\` nor whitespace or controls, then `>`. */
// Exactly the grammar's set (sparqljs's lexer uses it): a stricter one would let an IRI hide `)`.
const IRIREF = new RegExp(`<[^<>"{}|^\`\\\\${String.fromCharCode(0)}- ]*>`, "y");

/**
 * The deepest bracket nesting of a SPARQL query's text, skipping strings ('…', "…", '''…''', """…"""
 * with their escapes), IRIs (`<…>`), comments (`#` to the end of the line) and escaped characters of
 * prefixed names (`ex:a\)`), so that none of them can hide or fake a level.
 */
export function sparqlNesting(text: string): number {
  let depth = 0;
  let deepest = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i] as string;
    if (c === '"' || c === "'") {
      const long = text.startsWith(c.repeat(3), i);
      const end = long ? c.repeat(3) : c;
      i += end.length;
      // Escapes never end a string; a short string also ends at a line break (a syntax error).
      while (i < n && !text.startsWith(end, i)) {
        if (text[i] === "\\") i++;
        else if (!long && (text[i] === "\n" || text[i] === "\r")) break;
        i++;
      }
      i += end.length;
    } else if (c === "<") {
      IRIREF.lastIndex = i;
      // An IRI, or the less-than operator. A failed match stops at the next `<` at the latest, where
      // the next attempt starts: every character is read by one attempt, so the scan stays linear.
      i = IRIREF.test(text) ? IRIREF.lastIndex : i + 1;
    } else if (c === "#") {
      while (i < n && text[i] !== "\n" && text[i] !== "\r") i++;
    } else if (c === "\\") {
      i += 2;
    } else {
      if (OPENERS.has(c)) deepest = Math.max(deepest, ++depth);
      else if (CLOSERS.has(c)) depth = Math.max(0, depth - 1);
      i++;
    }
  }
  return deepest;
}

/** Why a SPARQL query's text is refused before parsing, or undefined. */
export function sparqlTextLimits(text: string): LimitReport {
  const nesting = sparqlNesting(text);
  if (nesting > MAX_SPARQL_NESTING) {
    return `the query nests groups, brackets and parentheses ${nesting} deep; the limit is ${MAX_SPARQL_NESTING}`;
  }
  return undefined;
}

/**
 * The deepest bracket nesting of a JSONPath query (strings in '…' or "…" skipped, with their escapes)
 * and its longest run of `!` (whitespace between them counts as part of the run).
 */
export function jsonPathShape(text: string): { nesting: number; nots: number } {
  let depth = 0;
  let nesting = 0;
  let run = 0;
  let nots = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i] as string;
    if (c === '"' || c === "'") {
      i++;
      while (i < n && text[i] !== c) i += text[i] === "\\" ? 2 : 1;
      i++;
      run = 0;
      continue;
    }
    if (c === "!" && text[i + 1] !== "=") nots = Math.max(nots, ++run);
    else if (c !== " " && c !== "\t" && c !== "\n" && c !== "\r") run = 0;
    if (c === "[" || c === "(") nesting = Math.max(nesting, ++depth);
    else if (c === "]" || c === ")") depth = Math.max(0, depth - 1);
    i++;
  }
  return { nesting, nots };
}

/** Why a JSONPath query's text is refused before parsing, or undefined. */
export function jsonPathTextLimits(text: string): LimitReport {
  const { nesting, nots } = jsonPathShape(text);
  if (nesting > MAX_JSONPATH_NESTING) {
    return `the query nests brackets and parentheses ${nesting} deep; the limit is ${MAX_JSONPATH_NESTING}`;
  }
  if (nots > MAX_JSONPATH_NOTS) {
    return `the query has ${nots} ! in a row; the limit is ${MAX_JSONPATH_NOTS}`;
  }
  return undefined;
}
