import { type JSONValue, jsonpath } from "json-p3";

/**
 * A JSONPath search's query (RFC 9535, json-p3): compiled once, then evaluated page by page over the
 * array of enriched TDs (jsonpath-search.ts). Runs in a query worker (query-pool.ts): a regular
 * expression in match()/search() can backtrack for hours, so the thread running it must be one that
 * can be ended.
 *
 * The array is never built: the query runs on each page, which gives the same result as on the
 * whole array only for queries that do not depend on a TD's position in it or on the array as a
 * whole. Those are answered; the others (`$` alone, an index or slice at the root, several selectors
 * at the root, `..*` or `..[?]` from the root, `$` inside a filter) are refused (pagewiseRefusal).
 */

const { FilterSelector, IndexSelector, NameSelector, SliceSelector, WildcardSelector } = jsonpath.selectors;
const { FilterQuery, FunctionExtension, InfixExpression, LogicalExpression, PrefixExpression, RootQuery } =
  jsonpath.expressions;
export type JsonPathQuery = ReturnType<typeof jsonpath.compile>;
type Expression = InstanceType<typeof LogicalExpression>["expression"];

/** Whether an expression (of a filter) contains an absolute query (`$...`). */
function refersToRoot(expression: Expression): boolean {
  if (expression instanceof RootQuery) return true;
  if (expression instanceof FilterQuery) return queryRefersToRoot(expression.path);
  if (expression instanceof LogicalExpression) return refersToRoot(expression.expression);
  if (expression instanceof PrefixExpression) return refersToRoot(expression.right);
  if (expression instanceof InfixExpression)
    return refersToRoot(expression.left) || refersToRoot(expression.right);
  if (expression instanceof FunctionExtension) return expression.args.some(refersToRoot);
  return false;
}

function queryRefersToRoot(query: JsonPathQuery): boolean {
  return query.segments.some((segment) =>
    segment.selectors.some((s) => s instanceof FilterSelector && refersToRoot(s.expression)),
  );
}

/** Why `query` cannot run page by page (see above), or undefined when it can. */
export function pagewiseRefusal(query: JsonPathQuery): string | undefined {
  const [first] = query.segments;
  if (first === undefined) return "$ alone selects the whole collection; list it with GET /things";
  if (queryRefersToRoot(query)) return "a filter refers to the whole collection ($)";
  // Names select nothing in the root array; only the other selectors matter there.
  const selectors = first.selectors.filter((s) => !(s instanceof NameSelector));
  const descendant = first.token.kind === jsonpath.TokenKind.DDOT;
  if (descendant && selectors.length > 0) {
    return "a descendant segment at the root with other than names (..*, ..[0], ..[?]) selects by position in the collection";
  }
  if (selectors.some((s) => s instanceof IndexSelector || s instanceof SliceSelector)) {
    return "an index or slice at the root selects TDs by position; page with GET /things?offset&limit";
  }
  if (selectors.length > 1) return "several selectors at the root would order results across the collection";
  if (
    selectors.length === 1 &&
    !(selectors[0] instanceof WildcardSelector || selectors[0] instanceof FilterSelector)
  ) {
    return "unsupported selector at the root";
  }
  return undefined;
}

/** A query refused, with the problem's title and detail. */
export interface JsonPathRefusal {
  title: string;
  detail: string;
}

/** Compiles `text`, or says why it is refused. */
export function compileJsonPath(text: string): JsonPathQuery | JsonPathRefusal {
  let query: JsonPathQuery;
  try {
    query = new jsonpath.JSONPathEnvironment({ strict: true }).compile(text);
  } catch (err) {
    if (err instanceof jsonpath.JSONPathError) {
      return { title: "Bad Request", detail: `the query is not valid JSONPath (RFC 9535): ${err.message}` };
    }
    throw err;
  }
  const refused = pagewiseRefusal(query);
  if (refused !== undefined) {
    return { title: "Unsupported Query", detail: `this query is not supported here: ${refused}` };
  }
  return query;
}

/**
 * The matches of `query` in `page` (a JSON array), each as JSON text, while their characters (one
 * more each, for the separator) stay within `maxChars`; undefined past it.
 */
export function evaluatePage(query: JsonPathQuery, page: JSONValue, maxChars: number): string[] | undefined {
  const parts: string[] = [];
  let chars = 0;
  for (const node of query.lazyQuery(page)) {
    const json = JSON.stringify(node.value);
    chars += json.length + 1;
    if (chars > maxChars) return undefined;
    parts.push(json);
  }
  return parts;
}
