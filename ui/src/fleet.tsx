import { useState } from "preact/hooks";
import {
  api,
  errorText,
  type Instance,
  LIFECYCLE_STATES,
  may,
  type NodeView,
  type Package,
  type Session,
  TIERS,
} from "./api";
import { Link, navigate, usePolling } from "./router";

const BINS = 10;

/** How many instances have an ODTE in each tenth of [0, 1]. */
function odteBins(instances: Instance[]): number[] {
  const bins = new Array<number>(BINS).fill(0);
  for (const i of instances) {
    if (i.entanglement === undefined) continue;
    const b = Math.min(BINS - 1, Math.floor(i.entanglement.odte * BINS));
    bins[b] = (bins[b] ?? 0) + 1;
  }
  return bins;
}

/** A bar chart as a list: readable without the bars, and by a screen reader. */
function Bars({ label, rows }: { label: string; rows: { name: string; count: number }[] }) {
  const max = Math.max(1, ...rows.map((r) => r.count));
  return (
    <ul class="bars" aria-label={label}>
      {rows.map((r) => (
        <li key={r.name}>
          <span class="bar-name">{r.name}</span>
          <meter min={0} max={max} value={r.count} aria-label={`${r.name}: ${r.count}`} />
          <span class="bar-count">{r.count}</span>
        </li>
      ))}
    </ul>
  );
}

function StartForm({ nodes, onStarted }: { nodes: NodeView[]; onStarted: (id: string) => void }) {
  const packages = usePolling(() => api<Package[]>("/api/packages"), 60_000);
  const [pkg, setPkg] = useState("");
  const [node, setNode] = useState("");
  const [id, setId] = useState("");
  const [config, setConfig] = useState<Record<string, string>>({});
  const [status, setStatus] = useState<string | undefined>();
  const chosen = packages.value?.find((p) => p.id === pkg);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!chosen) return;
    const configuration: Record<string, unknown> = {};
    for (const [name, p] of Object.entries(chosen.parameters ?? {})) {
      const text = config[name];
      if (text === undefined || text === "") continue;
      configuration[name] =
        p.type === "number" || p.type === "integer"
          ? Number(text)
          : p.type === "boolean"
            ? text === "true"
            : text;
    }
    try {
      const started = await api<Instance>("/api/instances", {
        method: "POST",
        body: { package: pkg, node, ...(id ? { id } : {}), configuration },
      });
      setStatus(`Started ${started.id}`);
      onStarted(started.id);
    } catch (err) {
      setStatus(`Not started: ${errorText(err)}`);
    }
  };
  return (
    <form class="card" onSubmit={submit} aria-labelledby="start-title">
      <h2 id="start-title">Start an instance</h2>
      <div class="fields">
        <label>
          Package
          <select required value={pkg} onChange={(e) => setPkg((e.target as HTMLSelectElement).value)}>
            <option value="">Choose…</option>
            {packages.value?.map((p) => (
              <option key={p.id} value={p.id}>
                {p.id} ({p.platform})
              </option>
            ))}
          </select>
        </label>
        <label>
          Node
          <select required value={node} onChange={(e) => setNode((e.target as HTMLSelectElement).value)}>
            <option value="">Choose…</option>
            {nodes
              .filter((n) => !chosen || n.platform === chosen.platform)
              .map((n) => (
                <option key={n.id} value={n.id}>
                  {n.id} ({n.tier})
                </option>
              ))}
          </select>
        </label>
        <label>
          Id (optional)
          <input value={id} onInput={(e) => setId((e.target as HTMLInputElement).value)} />
        </label>
        {Object.entries(chosen?.parameters ?? {}).map(([name, p]) => (
          <label key={name}>
            {name}
            {p.default === undefined ? " (required)" : ""}
            <input
              required={p.default === undefined}
              placeholder={p.default === undefined ? "" : String(p.default)}
              inputMode={p.type === "number" || p.type === "integer" ? "decimal" : undefined}
              value={config[name] ?? ""}
              onInput={(e) => setConfig({ ...config, [name]: (e.target as HTMLInputElement).value })}
            />
          </label>
        ))}
      </div>
      <button type="submit">Start</button>
      {status && <output aria-live="polite">{status}</output>}
    </form>
  );
}

export function FleetPage({ session }: { session: Session }) {
  const instances = usePolling(() => api<Instance[]>("/api/instances"), 2000);
  const nodes = usePolling(() => api<NodeView[]>("/api/nodes"), 5000);
  const list = instances.value ?? [];
  const byState = [...LIFECYCLE_STATES, "NotRunning"].map((s) => ({
    name: s,
    count: list.filter((i) => i.lifecycle === s).length,
  }));
  const bins = odteBins(list).map((count, b) => ({
    name: `${(b / BINS).toFixed(1)}–${((b + 1) / BINS).toFixed(1)}`,
    count,
  }));
  return (
    <main id="main">
      <h1>Fleet</h1>
      {instances.error && (
        <p role="alert" class="error">
          {instances.error}
        </p>
      )}
      <div class="grid">
        <section class="card" aria-labelledby="by-state">
          <h2 id="by-state">Instances by lifecycle</h2>
          <Bars label="Instances by lifecycle state" rows={byState} />
        </section>
        <section class="card" aria-labelledby="odte-dist">
          <h2 id="odte-dist">ODTE distribution</h2>
          <Bars label="Instances by ODTE" rows={bins} />
        </section>
        <section class="card" aria-labelledby="tiers">
          <h2 id="tiers">Nodes by tier</h2>
          {TIERS.map((tier) => {
            const of = (nodes.value ?? []).filter((n) => n.tier === tier);
            const free = of.reduce(
              (s, n) => ({ cpu: s.cpu + n.free.cpu, memory: s.memory + n.free.memory }),
              {
                cpu: 0,
                memory: 0,
              },
            );
            return (
              <p key={tier}>
                <strong>{tier}</strong>: {of.length} node{of.length === 1 ? "" : "s"},{" "}
                {of.filter((n) => n.ready).length} ready; free {free.cpu} CPU, {free.memory} MiB
              </p>
            );
          })}
        </section>
      </div>
      <section aria-labelledby="instances">
        <h2 id="instances">Instances</h2>
        <div class="scroll">
          <table class="table" data-testid="instances">
            <thead>
              <tr>
                <th scope="col">Id</th>
                <th scope="col">Lifecycle</th>
                <th scope="col">ODTE</th>
                <th scope="col">Node</th>
                <th scope="col">Package</th>
              </tr>
            </thead>
            <tbody>
              {list.map((i) => (
                <tr key={i.id}>
                  <th scope="row">
                    <Link href={`/ui/twins/${encodeURIComponent(i.id)}`}>{i.id}</Link>
                  </th>
                  <td>
                    <span class={`state state-${i.lifecycle}`}>{i.lifecycle}</span>
                    {i.failed && <span class="error"> {i.failed}</span>}
                  </td>
                  <td>{i.entanglement ? i.entanglement.odte.toFixed(3) : "–"}</td>
                  <td>{i.node}</td>
                  <td>{i.package}</td>
                </tr>
              ))}
              {list.length === 0 && (
                <tr>
                  <td colSpan={5}>{instances.value ? "No instances yet." : "Loading…"}</td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
      </section>
      {may(session.role, "operator") && (
        <StartForm
          nodes={nodes.value ?? []}
          onStarted={(id) => navigate(`/ui/twins/${encodeURIComponent(id)}`)}
        />
      )}
    </main>
  );
}
