import { useState } from "preact/hooks";
import { api, enc, errorText, may, type NodeView, type Session, TIERS } from "./api";
import { usePolling } from "./router";

const PLATFORMS = ["in-process", "docker", "kubernetes"];

function RegisterNode({ onDone }: { onDone: () => void }) {
  const [form, setForm] = useState({
    id: "",
    platform: "in-process",
    tier: "edge",
    cpu: "1",
    memory: "512",
    latencyMs: "",
  });
  const [status, setStatus] = useState<string | undefined>();
  const field = (name: keyof typeof form, label: string, numeric = false) => (
    <label>
      {label}
      <input
        type="text"
        inputMode={numeric ? "decimal" : "text"}
        required={name !== "latencyMs"}
        value={form[name]}
        onInput={(e) => setForm({ ...form, [name]: (e.target as HTMLInputElement).value })}
      />
    </label>
  );
  return (
    <form
      class="card"
      aria-labelledby="register"
      onSubmit={async (e) => {
        e.preventDefault();
        try {
          await api("/api/nodes", {
            method: "POST",
            body: {
              id: form.id,
              platform: form.platform,
              tier: form.tier,
              capabilities: { cpu: Number(form.cpu), memory: Number(form.memory), gpu: 0 },
              ...(form.latencyMs === "" ? {} : { latencyMs: Number(form.latencyMs) }),
            },
          });
          setStatus(`Registered ${form.id}`);
          onDone();
        } catch (err) {
          setStatus(`Not registered: ${errorText(err)}`);
        }
      }}
    >
      <h2 id="register">Register a node</h2>
      <div class="fields">
        {field("id", "Id")}
        <label>
          Platform
          <select
            value={form.platform}
            onChange={(e) => setForm({ ...form, platform: (e.target as HTMLSelectElement).value })}
          >
            {PLATFORMS.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          Tier
          <select
            value={form.tier}
            onChange={(e) => setForm({ ...form, tier: (e.target as HTMLSelectElement).value })}
          >
            {TIERS.map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
        </label>
        {field("cpu", "CPU cores", true)}
        {field("memory", "Memory, MiB", true)}
        {field("latencyMs", "Latency, ms (optional)", true)}
      </div>
      <button type="submit">Register</button>
      {status && <output aria-live="polite">{status}</output>}
    </form>
  );
}

export function NodesPage({ session }: { session: Session }) {
  const nodes = usePolling(() => api<NodeView[]>("/api/nodes"), 5000);
  const [status, setStatus] = useState<string | undefined>();
  const list = nodes.value ?? [];
  const admin = may(session.role, "admin");
  return (
    <main id="main">
      <h1>Nodes and platforms</h1>
      <section aria-labelledby="platforms">
        <h2 id="platforms">Platforms</h2>
        <ul class="grid plain">
          {PLATFORMS.map((p) => {
            const of = list.filter((n) => n.platform === p);
            return (
              <li key={p} class="card">
                <strong>{p}</strong>: {of.length} node{of.length === 1 ? "" : "s"},{" "}
                {of.filter((n) => n.ready).length} ready, {of.reduce((s, n) => s + n.instances, 0)} instances
              </li>
            );
          })}
        </ul>
      </section>
      <section aria-labelledby="nodes">
        <h2 id="nodes">Nodes</h2>
        {status && <output aria-live="polite">{status}</output>}
        <div class="scroll">
          <table class="table">
            <thead>
              <tr>
                <th scope="col">Id</th>
                <th scope="col">Platform</th>
                <th scope="col">Tier</th>
                <th scope="col">Ready</th>
                <th scope="col">Instances</th>
                <th scope="col">CPU free / total</th>
                <th scope="col">Memory free / total (MiB)</th>
                <th scope="col">Latency</th>
                {admin && <th scope="col">Manage</th>}
              </tr>
            </thead>
            <tbody>
              {list.map((n) => (
                <tr key={n.id}>
                  <th scope="row">{n.id}</th>
                  <td>{n.platform}</td>
                  <td>{n.tier}</td>
                  <td>{n.ready ? "yes" : `no: ${n.reason ?? ""}`}</td>
                  <td>{n.instances}</td>
                  <td>
                    {n.free.cpu} / {n.capabilities.cpu}
                  </td>
                  <td>
                    {n.free.memory} / {n.capabilities.memory}
                  </td>
                  <td>{n.latencyMs === undefined ? "–" : `${n.latencyMs} ms`}</td>
                  {admin && (
                    <td>
                      {!n.builtIn && (
                        <button
                          type="button"
                          class="danger"
                          aria-label={`Remove node ${n.id}`}
                          onClick={async () => {
                            try {
                              await api(`/api/nodes/${enc(n.id)}`, { method: "DELETE" });
                              nodes.reload();
                            } catch (err) {
                              setStatus(`Not removed: ${errorText(err)}`);
                            }
                          }}
                        >
                          Remove
                        </button>
                      )}
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      {admin && <RegisterNode onDone={nodes.reload} />}
    </main>
  );
}
