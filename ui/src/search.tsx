import { useState } from "preact/hooks";
import { api, enc, errorText, type NamedQuery, type SparqlResults } from "./api";
import { Link, usePolling } from "./router";

const PREFIXES = `PREFIX td: <https://www.w3.org/2019/wot/td#>
PREFIX dtc: <https://w3id.org/dtc#>
`;

const EXAMPLES = [
  {
    name: "Every digital twin with its title",
    query: `${PREFIXES}SELECT ?thing ?title WHERE {
  GRAPH ?thing { ?thing a dtc:DigitalTwin . OPTIONAL { ?thing td:title ?title } }
} LIMIT 100`,
  },
  {
    name: "Twins with an action named setRate",
    query: `${PREFIXES}SELECT DISTINCT ?thing WHERE {
  GRAPH ?thing { ?thing a dtc:DigitalTwin ; td:hasActionAffordance ?a . ?a td:name "setRate" }
} LIMIT 100`,
  },
  {
    name: "Every TD in the directory",
    query: `${PREFIXES}SELECT ?thing ?title WHERE { GRAPH ?thing { ?thing a td:Thing ; td:title ?title } } LIMIT 100`,
  },
];

const ACCEPT = "application/sparql-results+json, application/ld+json;q=0.5";

/** The dashboard's own TD ids of twins: `urn:dtc:twin:{id}` (src/domain/vocabulary.ts). */
const TWIN_PREFIX = "urn:dtc:twin:";

function Value({ text }: { text: string }) {
  if (!text.startsWith(TWIN_PREFIX)) return <>{text}</>;
  return <Link href={`/ui/twins/${enc(text.slice(TWIN_PREFIX.length))}`}>{text}</Link>;
}

function Results({ results }: { results: SparqlResults | string }) {
  if (typeof results === "string") return <pre class="scroll">{results}</pre>;
  if (results.boolean !== undefined) return <p>Answer: {String(results.boolean)}</p>;
  const vars = results.head?.vars ?? [];
  const rows = results.results?.bindings ?? [];
  return (
    <div class="scroll">
      <table class="table" data-testid="results">
        <caption>
          {rows.length} result{rows.length === 1 ? "" : "s"}
        </caption>
        <thead>
          <tr>
            {vars.map((v) => (
              <th key={v} scope="col">
                {v}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row, n) => (
            <tr key={n}>
              {vars.map((v) => (
                <td key={v}>
                  <Value text={row[v]?.value ?? ""} />
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function useQuery() {
  const [results, setResults] = useState<SparqlResults | string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const run = async (call: () => Promise<SparqlResults | string>) => {
    setBusy(true);
    setError(undefined);
    try {
      setResults(await call());
    } catch (err) {
      setResults(undefined);
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  return { results, error, busy, run };
}

function NamedForm({ query, onRun }: { query: NamedQuery; onRun: (params: Record<string, string>) => void }) {
  const [params, setParams] = useState<Record<string, string>>({});
  return (
    <form
      class="card"
      aria-labelledby={`nq-${query.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        onRun(params);
      }}
    >
      <h3 id={`nq-${query.name}`}>{query.name}</h3>
      <p class="hint">{query.description}</p>
      {query.params.map((p) => (
        <div class="field" key={p.name}>
          <label for={`nq-${query.name}-${p.name}`}>
            {p.name} ({p.type}
            {p.optional ? ", optional" : ""})
          </label>
          <input
            id={`nq-${query.name}-${p.name}`}
            required={!p.optional}
            value={params[p.name] ?? ""}
            onInput={(e) => setParams({ ...params, [p.name]: (e.target as HTMLInputElement).value })}
            aria-describedby={`nq-${query.name}-${p.name}-hint`}
          />
          <small class="hint" id={`nq-${query.name}-${p.name}-hint`}>
            {p.description}
          </small>
        </div>
      ))}
      <button type="submit">Run {query.name}</button>
    </form>
  );
}

export function SearchPage() {
  const named = usePolling(() => api<NamedQuery[]>("/search/named"), 600_000);
  const [text, setText] = useState(EXAMPLES[0]?.query ?? "");
  const q = useQuery();
  const runNamed = (name: string, params: Record<string, string>) => {
    const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== ""));
    q.run(() => api(`/search/named/${enc(name)}?${search}`, { accept: ACCEPT }));
  };
  return (
    <main id="main">
      <h1>Directory search</h1>
      <section aria-labelledby="sparql">
        <h2 id="sparql">SPARQL</h2>
        <form
          class="card"
          onSubmit={(e) => {
            e.preventDefault();
            q.run(() =>
              api("/search/sparql", {
                method: "POST",
                body: text,
                rawType: "application/sparql-query",
                accept: ACCEPT,
              }),
            );
          }}
        >
          <label for="example">Examples</label>
          <select
            id="example"
            onChange={(e) => {
              const example = EXAMPLES.find((x) => x.name === (e.target as HTMLSelectElement).value);
              if (example) setText(example.query);
            }}
          >
            {EXAMPLES.map((x) => (
              <option key={x.name}>{x.name}</option>
            ))}
          </select>
          <label for="query">Query (SELECT, ASK, CONSTRUCT or DESCRIBE)</label>
          <textarea
            id="query"
            rows={8}
            spellcheck={false}
            value={text}
            onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          />
          <button type="submit" disabled={q.busy}>
            Run query
          </button>
        </form>
      </section>
      <section aria-labelledby="results-title" aria-live="polite">
        <h2 id="results-title">Results</h2>
        {q.error && (
          <p role="alert" class="error">
            {q.error}
          </p>
        )}
        {q.results !== undefined ? <Results results={q.results} /> : !q.error && <p>Run a query.</p>}
      </section>
      <section aria-labelledby="named">
        <h2 id="named">Named queries</h2>
        <div class="grid">
          {named.value?.map((n) => (
            <NamedForm key={n.name} query={n} onRun={(params) => runNamed(n.name, params)} />
          ))}
        </div>
      </section>
    </main>
  );
}
