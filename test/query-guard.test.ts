import sparqljs from "sparqljs";
import { describe, expect, it } from "vitest";
import {
  ALLOWED_FUNCTIONS,
  BUILT_IN_OPERATORS,
  guardQuery,
  QueryRefusedError,
  XSD_CASTS,
} from "../src/directory/query-guard.js";

const XSD = "PREFIX xsd: <http://www.w3.org/2001/XMLSchema#>\n";
const BIF = "PREFIX bif: <bif:>\n";
const TD = "PREFIX td: <https://www.w3.org/2019/wot/td#>\n";

const guard = (text: string, maxResults = 100) => guardQuery(text, { maxResults });
/** The refusal's message (the 400's detail); fails the test when the query passes. */
const refusal = (text: string): string => {
  try {
    guard(text);
  } catch (err) {
    expect(err).toBeInstanceOf(QueryRefusedError);
    return (err as Error).message;
  }
  throw new Error(`the guard let through: ${text}`);
};

describe("the query guard", () => {
  it.each([
    ["a plain SELECT", `${TD}SELECT ?t ?title WHERE { ?t a td:Thing ; td:title ?title }`],
    ["FILTER(regex())", `${TD}SELECT ?t WHERE { ?t td:title ?x FILTER(regex(?x, "^Dev", "i")) }`],
    ["STR and other built-ins", `SELECT (STR(?s) AS ?x) (LCASE(STR(?o)) AS ?y) WHERE { ?s ?p ?o }`],
    ["an xsd:integer cast", `${XSD}SELECT (xsd:integer("42") AS ?n) WHERE {}`],
    [
      "xsd:dateTime and xsd:boolean casts",
      `${XSD}ASK { FILTER(xsd:dateTime(?d) > NOW() || xsd:boolean(?b)) }`,
    ],
    [
      "GROUP BY with COUNT",
      `SELECT ?p (COUNT(DISTINCT ?s) AS ?n) WHERE { ?s ?p ?o } GROUP BY ?p HAVING (COUNT(?s) > 1) ORDER BY DESC(?n)`,
    ],
    ["EXISTS in a subquery", `SELECT * WHERE { { SELECT ?s WHERE { ?s ?p ?o FILTER EXISTS { ?s a ?c } } } }`],
    ["CONSTRUCT", `CONSTRUCT { ?s <urn:x:p> ?o } WHERE { ?s ?p ?o }`],
    ["DESCRIBE", `DESCRIBE <urn:dtc:twin:d1>`],
  ])("lets %s through", (_what, text) => {
    const { sparql } = guard(text);
    expect(sparql.length).toBeGreaterThan(0);
  });

  it("sends text regenerated from the syntax tree: no comments, no prefixes, no base, full IRIs", () => {
    const { sparql } = guard(
      `# a comment the store never sees\nBASE <http://example.org/>\n${TD}SELECT ?t WHERE { ?t a td:Thing ; <rel> ?o } # trailing`,
    );
    expect(sparql).not.toMatch(/comment|trailing|PREFIX|BASE/);
    expect(sparql).toContain("<https://www.w3.org/2019/wot/td#Thing>");
    expect(sparql).toContain("<http://example.org/rel>");
    // It means the same: parsed again, it is the same query.
    const again = new sparqljs.Parser().parse(sparql);
    expect(again).toMatchObject({ queryType: "SELECT", limit: 100 });
  });

  it("lowers a missing or larger LIMIT to the cap, keeps a smaller one, leaves ASK alone", () => {
    expect(guard("SELECT * WHERE { ?s ?p ?o }", 7).sparql).toMatch(/LIMIT 7$/);
    expect(guard("SELECT * WHERE { ?s ?p ?o } LIMIT 500", 7).sparql).toMatch(/LIMIT 7$/);
    expect(guard("SELECT * WHERE { ?s ?p ?o } LIMIT 3", 7).sparql).toMatch(/LIMIT 3$/);
    expect(guard("CONSTRUCT WHERE { ?s ?p ?o }", 7).sparql).toMatch(/LIMIT 7$/);
    expect(guard("ASK { ?s ?p ?o }", 7).sparql).not.toContain("LIMIT");
  });

  it.each([
    ["bif:file_to_string", `${BIF}SELECT (bif:file_to_string('/etc/passwd') AS ?x) {}`, "bif:file_to_string"],
    ["bif:http_get", `SELECT (<bif:http_get>("http://169.254.169.254/") AS ?x) {}`, "bif:http_get"],
    ["bif:exec", `${BIF}SELECT (bif:exec("DB.DBA.X()") AS ?x) {}`, "bif:exec"],
    [
      "a sql: procedure",
      `PREFIX sql: <sql:>\nSELECT (sql:RDF_GRAPH_GROUP_CREATE(1) AS ?x) {}`,
      "sql:RDF_GRAPH_GROUP_CREATE",
    ],
    [
      "a java: function (Jena)",
      `SELECT ?x { BIND(<java:com.example.Evil>() AS ?x) }`,
      "java:com.example.Evil",
    ],
    ["a custom IRI function", `SELECT (<urn:no:such:function>(1) AS ?x) WHERE {}`, "urn:no:such:function"],
    [
      "Virtuoso's full bif IRI",
      `SELECT (<http://www.openlinksw.com/schemas/bif#file_to_string>("/etc/passwd") AS ?x) {}`,
      "http://www.openlinksw.com/schemas/bif#file_to_string",
    ],
    [
      "bif: behind another prefix name",
      `PREFIX f: <bif:>\nSELECT (f:file_to_string("/etc/passwd") AS ?x) {}`,
      "bif:file_to_string",
    ],
    [
      "bif: through BASE",
      `BASE <bif:>\nSELECT (<file_to_string>("/etc/passwd") AS ?x) {}`,
      "bif:file_to_string",
    ],
    [
      "a function nested in a subquery",
      `${BIF}SELECT * WHERE { { SELECT (bif:file_to_string("/etc/passwd") AS ?x) WHERE {} } }`,
      "bif:file_to_string",
    ],
    ["a function in BIND", `${BIF}SELECT ?x WHERE { BIND(bif:http_get("http://x/") AS ?x) }`, "bif:http_get"],
    ["a function in FILTER", `${BIF}ASK { ?s ?p ?o FILTER(bif:http_get(STR(?o)) != "") }`, "bif:http_get"],
    [
      "a function in ORDER BY",
      `${BIF}SELECT ?s WHERE { ?s ?p ?o } ORDER BY bif:http_get(STR(?s))`,
      "bif:http_get",
    ],
    ["a function in GROUP BY", `${BIF}SELECT ?g WHERE { ?s ?p ?o } GROUP BY (bif:md5(?o) AS ?g)`, "bif:md5"],
    ["a function in HAVING", `${BIF}SELECT ?p WHERE { ?s ?p ?o } GROUP BY ?p HAVING (bif:x(?p))`, "bif:x"],
    [
      "a function inside an aggregate",
      `${BIF}SELECT (COUNT(bif:http_get(STR(?s))) AS ?n) WHERE { ?s ?p ?o }`,
      "bif:http_get",
    ],
    [
      "a function in FILTER EXISTS",
      `${BIF}SELECT * WHERE { ?s ?p ?o FILTER NOT EXISTS { ?s ?q ?r FILTER(bif:x(?r)) } }`,
      "bif:x",
    ],
    [
      "a function in a CONSTRUCT's WHERE",
      `${BIF}CONSTRUCT { ?s <urn:x:p> ?x } WHERE { ?s ?p ?o BIND(bif:file_to_string("/etc/passwd") AS ?x) }`,
      "bif:file_to_string",
    ],
    ["a function in a DESCRIBE's WHERE", `${BIF}DESCRIBE ?s WHERE { ?s ?p ?o FILTER(bif:x(?o)) }`, "bif:x"],
  ])("refuses %s, naming it", (_what, text, iri) => {
    expect(refusal(text)).toContain(`<${iri}> is not allowed`);
  });

  it("refuses magic predicates, also inside property paths", () => {
    expect(refusal(`${BIF}SELECT ?s WHERE { ?s ?p ?o . ?o bif:contains "secret" }`)).toContain(
      "predicate <bif:contains> is not allowed",
    );
    expect(refusal(`${BIF}SELECT ?s WHERE { ?s <urn:x:a>/bif:contains ?o }`)).toContain("<bif:contains>");
    expect(refusal(`SELECT ?s WHERE { ?s <http://jena.apache.org/text#query> "x" }`)).toContain(
      "<http://jena.apache.org/text#query>",
    );
  });

  it("refuses Virtuoso's DEFINE pragmas, updates and SERVICE", () => {
    expect(refusal(`DEFINE input:inference "x"\nSELECT * WHERE { ?s ?p ?o }`)).toMatch(
      /not valid SPARQL 1\.1: DEFINE pragmas .* are not accepted/,
    );
    expect(
      refusal(`# hidden\ndefine get:soft "replace"\nSELECT * FROM <http://evil/> { ?s ?p ?o }`),
    ).toContain("DEFINE pragmas");
    expect(refusal(`INSERT DATA { <urn:a> <urn:b> <urn:c> }`)).toContain("updates are not accepted");
    expect(refusal(`SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }`)).toContain(
      "SERVICE",
    );
    // Without a PREFIX, bif: is no prefix sparqljs knows: a syntax error before any check.
    expect(refusal(`SELECT (bif:file_to_string('/etc/passwd') AS ?x) {}`)).toMatch(
      /not valid SPARQL 1\.1: Unknown prefix: bif/,
    );
  });

  it("allows nothing but the casts besides the built-ins, and says so", () => {
    expect([...ALLOWED_FUNCTIONS]).toEqual([]);
    expect(XSD_CASTS.has("http://www.w3.org/2001/XMLSchema#integer")).toBe(true);
    expect(BUILT_IN_OPERATORS.has("regex")).toBe(true);
    // Every built-in call the grammar has parses to an operator on the list.
    const calls = [
      "STR(?x)",
      "LANG(?x)",
      "LANGMATCHES(?x, '*')",
      "DATATYPE(?x)",
      "BOUND(?x)",
      "IRI(?x)",
      "URI(?x)",
      "BNODE()",
      "BNODE(?x)",
      "RAND()",
      "ABS(?x)",
      "CEIL(?x)",
      "FLOOR(?x)",
      "ROUND(?x)",
      "CONCAT(?x, ?x)",
      "STRLEN(?x)",
      "UCASE(?x)",
      "LCASE(?x)",
      "ENCODE_FOR_URI(?x)",
      "CONTAINS(?x, ?x)",
      "STRSTARTS(?x, ?x)",
      "STRENDS(?x, ?x)",
      "STRBEFORE(?x, ?x)",
      "STRAFTER(?x, ?x)",
      "YEAR(?x)",
      "MONTH(?x)",
      "DAY(?x)",
      "HOURS(?x)",
      "MINUTES(?x)",
      "SECONDS(?x)",
      "TIMEZONE(?x)",
      "TZ(?x)",
      "NOW()",
      "UUID()",
      "STRUUID()",
      "MD5(?x)",
      "SHA1(?x)",
      "SHA256(?x)",
      "SHA384(?x)",
      "SHA512(?x)",
      "COALESCE(?x, 1)",
      "IF(?x, 1, 2)",
      "STRLANG(?x, 'en')",
      "STRDT(?x, <urn:t>)",
      "sameTerm(?x, ?x)",
      "isIRI(?x)",
      "isURI(?x)",
      "isBlank(?x)",
      "isLiteral(?x)",
      "isNumeric(?x)",
      "REGEX(?x, 'a')",
      "SUBSTR(?x, 1)",
      "REPLACE(?x, 'a', 'b')",
      "?x IN (1, 2)",
      "?x NOT IN (1)",
      "-?x",
      "+?x",
      "!?x",
      "?x * 2 / 3 + 1 - 1 < 2 && ?x >= 1 || ?x != 3",
    ];
    const query = `SELECT * WHERE { ?s ?p ?x ${calls.map((c) => `FILTER(${c})`).join(" ")} }`;
    expect(() => guard(query)).not.toThrow();
  });
});
