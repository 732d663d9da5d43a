import "uplot/dist/uPlot.min.css";
import "./style.css";
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { errorText, type Session, storedToken, storeToken, whoami } from "./api";
import { FleetPage } from "./fleet";
import { NodesPage } from "./nodes";
import { Link, navigate, usePath } from "./router";
import { SearchPage } from "./search";
import { TwinPage } from "./twin";

function SignIn({ onSession, error }: { onSession: (s: Session) => void; error?: string | undefined }) {
  const [token, setToken] = useState("");
  const [problem, setProblem] = useState(error);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      const session = await whoami(token.trim());
      storeToken(session.token);
      onSession(session);
    } catch (err) {
      setProblem(`Not signed in: ${errorText(err)}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main id="main" class="signin">
      <h1>dtc dashboard</h1>
      <form onSubmit={submit} class="card">
        <h2>Sign in</h2>
        <p>
          Paste an API token (<code>dtc token create</code>, or the gateway's first admin token in{" "}
          <code>DTC_DATA_DIR/admin.token</code>).
        </p>
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
        />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {problem && (
          <p role="alert" class="error">
            {problem}
          </p>
        )}
      </form>
    </main>
  );
}

const PAGES = [
  { path: "/ui/", label: "Fleet" },
  { path: "/ui/search", label: "Directory search" },
  { path: "/ui/nodes", label: "Nodes and platforms" },
  { path: "/ui/events", label: "Event History" },
];

function EventsPage() {
  return (
    <main id="main">
      <h1>Event History</h1>
      <p>
        The Event History (each orchestration decision with its reason, as a timeline) arrives with the
        orchestrator. Until then, each twin's own history is on its page.
      </p>
    </main>
  );
}

function Shell({ session, onSignOut }: { session: Session; onSignOut: () => void }) {
  const path = usePath();
  const twin = /^\/ui\/twins\/([^/]+)$/.exec(path);
  let page = <FleetPage session={session} />;
  if (twin?.[1]) page = <TwinPage id={decodeURIComponent(twin[1])} session={session} />;
  else if (path === "/ui/search") page = <SearchPage />;
  else if (path === "/ui/nodes") page = <NodesPage session={session} />;
  else if (path === "/ui/events") page = <EventsPage />;
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">dtc</span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((p) => (
              <li key={p.path}>
                <Link href={p.path} current={path === p.path || (p.path === "/ui/" && path === "/ui")}>
                  {p.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          {session.id} ({session.role}){" "}
          {session.token !== undefined && (
            <button type="button" class="link" onClick={onSignOut}>
              Sign out
            </button>
          )}
        </span>
      </header>
      {page}
    </>
  );
}

function App() {
  const [session, setSession] = useState<Session | undefined>();
  const [checking, setChecking] = useState(true);
  const [error, setError] = useState<string | undefined>();
  useEffect(() => {
    // A stored token, or none: a gateway with authentication off answers whoami without one.
    whoami(storedToken())
      .then(setSession)
      .catch((err) => {
        if (storedToken() !== undefined) setError(`The stored token was refused: ${errorText(err)}`);
        storeToken(undefined);
      })
      .finally(() => setChecking(false));
  }, []);
  if (checking) return <p aria-live="polite">Loading…</p>;
  if (!session) return <SignIn onSession={setSession} error={error} />;
  return (
    <Shell
      session={session}
      onSignOut={() => {
        storeToken(undefined);
        setSession(undefined);
        navigate("/ui/");
      }}
    />
  );
}

render(<App />, document.getElementById("app") as HTMLElement);
