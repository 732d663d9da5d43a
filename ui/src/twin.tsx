import { useEffect, useRef, useState } from "preact/hooks";
import {
  ADMIN_ACTIONS,
  api,
  type Entanglement,
  enc,
  errorText,
  type Instance,
  may,
  type NodeView,
  type Session,
  type ThingDescription,
} from "./api";
import { ActionForm } from "./form";
import { EntanglementPlot, emptySeries, type Series } from "./plot";
import { Link, navigate, usePolling } from "./router";

/** Points kept on the plot: a few minutes at the gateway's push interval. */
const MAX_POINTS = 600;

/**
 * The twin's entanglement as a stream: node-wot's long poll of the observable property, through the
 * gateway. While the twin is between two copies of itself (a move, a restart) the gateway answers
 * 503; the stream waits a moment and observes the copy that runs then.
 */
function useEntanglementStream(id: string): Series {
  const [series, setSeries] = useState<Series>(emptySeries);
  const last = useRef("");
  useEffect(() => {
    const abort = new AbortController();
    setSeries(emptySeries());
    last.current = "";
    const add = (e: Entanglement) => {
      if (e.evaluatedAt === last.current) return;
      last.current = e.evaluatedAt;
      setSeries((s) => {
        const keep = (xs: number[], x: number) => [...xs.slice(-(MAX_POINTS - 1)), x];
        return {
          t: keep(s.t, Date.parse(e.evaluatedAt) / 1000),
          timeliness: keep(s.timeliness, e.timeliness),
          reliability: keep(s.reliability, e.reliability),
          availability: keep(s.availability, e.availability),
          odte: keep(s.odte, e.odte),
        };
      });
    };
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    (async () => {
      // The current figures first: a long poll answers only the next change.
      await api<Entanglement>(`/twins/${enc(id)}/properties/entanglement`, { signal: abort.signal })
        .then(add)
        .catch(() => undefined);
      while (!abort.signal.aborted) {
        try {
          add(
            await api<Entanglement>(`/twins/${enc(id)}/properties/entanglement/observable`, {
              signal: abort.signal,
            }),
          );
        } catch {
          if (abort.signal.aborted) return;
          await pause(500);
        }
      }
    })();
    return () => abort.abort();
  }, [id]);
  return series;
}

interface HistoryEvent {
  type: string;
  at: string | number;
  data?: Record<string, unknown>;
}
interface History {
  states: { committedAt: string; values: Record<string, unknown> }[];
  events: HistoryEvent[];
}

const when = (at: string | number) => new Date(at).toLocaleTimeString();

function Controls({
  instance,
  session,
  onChange,
}: {
  instance: Instance;
  session: Session;
  onChange: () => void;
}) {
  const nodes = usePolling(() => api<NodeView[]>("/api/nodes"), 10_000);
  const [target, setTarget] = useState("");
  const [status, setStatus] = useState<string | undefined>();
  if (!may(session.role, "operator")) return null;
  const run = async (what: string, path: string, body?: unknown) => {
    setStatus(`${what}…`);
    try {
      await api(path, { method: "POST", ...(body === undefined ? {} : { body }) });
      setStatus(`${what}: done`);
      onChange();
    } catch (err) {
      setStatus(`${what}: ${errorText(err)}`);
    }
  };
  const path = `/api/instances/${enc(instance.id)}`;
  const others = (nodes.value ?? []).filter(
    (n) => n.id !== instance.node && n.platform === instance.platform,
  );
  return (
    <section class="card" aria-labelledby="manage">
      <h2 id="manage">Manage</h2>
      <div class="buttons">
        {instance.desired === "stopped" ? (
          <button type="button" onClick={() => run("Start", `${path}/start`)}>
            Start
          </button>
        ) : (
          <button type="button" onClick={() => run("Stop", `${path}/stop`)}>
            Stop
          </button>
        )}
        <button type="button" onClick={() => run("Restart", `${path}/restart`)}>
          Restart
        </button>
        <button type="button" onClick={() => run("Snapshot", `${path}/snapshots`)}>
          Snapshot
        </button>
        <button
          type="button"
          class="danger"
          onClick={async () => {
            if (!window.confirm(`Remove ${instance.id} and everything stored of it?`)) return;
            try {
              await api(path, { method: "DELETE" });
              navigate("/ui/");
            } catch (err) {
              setStatus(`Remove: ${errorText(err)}`);
            }
          }}
        >
          Remove
        </button>
      </div>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          if (target) run(`Move to ${target}`, `${path}/move`, { node: target });
        }}
      >
        <label for="move-node">Move to node</label>
        <select
          id="move-node"
          required
          value={target}
          onChange={(e) => setTarget((e.target as HTMLSelectElement).value)}
        >
          <option value="">Choose…</option>
          {others.map((n) => (
            <option key={n.id} value={n.id} disabled={!n.ready}>
              {n.id} ({n.tier}
              {n.ready ? "" : ", not ready"})
            </option>
          ))}
        </select>
        <button type="submit">Move</button>
      </form>
      {status && <output aria-live="polite">{status}</output>}
    </section>
  );
}

export function TwinPage({ id, session }: { id: string; session: Session }) {
  const instance = usePolling(() => api<Instance>(`/api/instances/${enc(id)}`), 1000, [id]);
  const td = usePolling(() => api<ThingDescription>(`/twins/${enc(id)}`), 10_000, [id]);
  const properties = usePolling(() => api<Record<string, unknown>>(`/twins/${enc(id)}/properties`), 2000, [
    id,
  ]);
  const history = usePolling(() => api<History>(`/twins/${enc(id)}/properties/history`), 3000, [id]);
  const series = useEntanglementStream(id);
  const i = instance.value;
  const e = i?.entanglement;
  const description = td.value ?? i?.td;
  const actions = Object.entries(description?.actions ?? {}).filter(
    ([name]) => may(session.role, "operator") && (!ADMIN_ACTIONS.has(name) || may(session.role, "admin")),
  );
  const lifecycle = (history.value?.events ?? []).filter((ev) => ev.type === "lifecycleChanged").slice(-30);
  const shown = Object.entries(properties.value ?? {}).filter(
    ([name]) => !["history", "augmentations"].includes(name),
  );
  return (
    <main id="main">
      <p>
        <Link href="/ui/">← Fleet</Link>
      </p>
      <h1>
        Twin {id}{" "}
        {i && (
          <span class={`state state-${i.lifecycle}`} data-testid="lifecycle">
            {i.lifecycle}
          </span>
        )}
      </h1>
      {instance.error && !i && (
        <p role="alert" class="error">
          {instance.error}
        </p>
      )}
      {i && (
        <p>
          On node <strong data-testid="node">{i.node}</strong> ({i.platform}), package {i.package}, desired{" "}
          {i.desired}
          {i.failed && <span class="error">: {i.failed}</span>}
        </p>
      )}
      <section class="card" aria-labelledby="live">
        <h2 id="live">Entanglement</h2>
        <EntanglementPlot series={series} />
        <p aria-live="off">
          {e
            ? `ODTE ${e.odte.toFixed(3)} = T ${e.timeliness.toFixed(3)} × R ${e.reliability.toFixed(3)} × A ${e.availability.toFixed(3)}${e.threshold === undefined ? "" : ` (threshold ${e.threshold})`}`
            : "No evaluation yet."}
        </p>
      </section>
      <div class="grid">
        {i && <Controls instance={i} session={session} onChange={instance.reload} />}
        <section class="card" aria-labelledby="props">
          <h2 id="props">Properties</h2>
          <dl class="props">
            {shown.map(([name, value]) => (
              <div key={name}>
                <dt>{description?.properties?.[name]?.title ?? name}</dt>
                <dd>{typeof value === "object" ? <code>{JSON.stringify(value)}</code> : String(value)}</dd>
              </div>
            ))}
          </dl>
        </section>
      </div>
      {actions.length > 0 && (
        <section aria-labelledby="actions">
          <h2 id="actions">Actions</h2>
          <div class="grid">
            {actions.map(([name, action]) => (
              <ActionForm key={name} twin={id} name={name} action={action} />
            ))}
          </div>
        </section>
      )}
      <section class="card" aria-labelledby="timeline">
        <h2 id="timeline">Lifecycle timeline</h2>
        <ol class="timeline">
          {lifecycle.map((ev) => (
            <li key={`${ev.at}-${String(ev.data?.to)}`}>
              <time>{when(ev.at)}</time> {String(ev.data?.from)} → <strong>{String(ev.data?.to)}</strong> (
              {String(ev.data?.event)})
            </li>
          ))}
          {lifecycle.length === 0 && <li>No changes recorded yet.</li>}
        </ol>
      </section>
      <section class="card" aria-labelledby="history">
        <h2 id="history">History</h2>
        <div class="scroll">
          <table class="table">
            <caption>The twin's latest events, newest first</caption>
            <thead>
              <tr>
                <th scope="col">At</th>
                <th scope="col">Event</th>
                <th scope="col">Data</th>
              </tr>
            </thead>
            <tbody>
              {(history.value?.events ?? [])
                .slice(-30)
                .reverse()
                .map((ev, n) => (
                  <tr key={`${ev.at}-${n}`}>
                    <td>{when(ev.at)}</td>
                    <td>{ev.type}</td>
                    <td>
                      <code>{JSON.stringify(ev.data)}</code>
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
        </div>
        <p>{history.value ? `${history.value.states.length} committed states kept.` : ""}</p>
      </section>
    </main>
  );
}
