import type { Command } from "commander";
import { usageError } from "./errors.js";
import { RESOURCES } from "./get.js";
import { print } from "./output.js";
import type { Cli } from "./runtime.js";

/**
 * Shell completion: the scripts ask `dtc __complete WORDS...` for the candidates, so they follow
 * the command tree (and the gateway's instance ids) without being regenerated.
 */

const INSTANCE_COMMANDS = new Set(["stop", "start", "restart", "rm", "move", "clone", "snapshot", "history"]);

function commandWords(command: Command): string[] {
  return command.commands
    .filter((c) => !(c as unknown as { _hidden?: boolean })._hidden)
    .map((c) => c.name());
}

function optionWords(command: Command): string[] {
  return command.options.flatMap((o) => [o.long, o.short].filter((w): w is string => w !== undefined));
}

/** What may follow `words` (the last one being typed). */
async function candidates(cli: Cli, words: string[]): Promise<string[]> {
  let command = cli.program;
  const typed = words.slice(0, -1);
  const positional: string[] = [];
  for (const word of typed) {
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (sub && positional.length === 0) command = sub;
    else if (!word.startsWith("-")) positional.push(word);
  }
  const current = words.at(-1) ?? "";
  if (current.startsWith("-")) return [...optionWords(command), ...optionWords(cli.program), "--help"];
  const subs = commandWords(command);
  if (subs.length > 0) return subs;
  const name = command.name();
  if ((name === "get" && positional.length === 0) || name === "describe") {
    return name === "describe" && positional.length === 0
      ? ["instance"]
      : positional.length === 0
        ? Object.keys(RESOURCES)
        : await instanceIds(cli);
  }
  if (name === "completion") return ["bash", "zsh", "fish"];
  if (INSTANCE_COMMANDS.has(name) && positional.length === 0) return instanceIds(cli);
  return [];
}

/** The gateway's instance ids, or none if it does not answer within a second. */
async function instanceIds(cli: Cli): Promise<string[]> {
  try {
    const client = cli.client();
    const res = await client.fetch("GET", "/api/instances", { signal: AbortSignal.timeout(1000) });
    if (!res.ok) return [];
    return ((await res.json()) as { id: string }[]).map((i) => i.id);
  } catch {
    return [];
  }
}

const SCRIPTS: Record<string, string> = {
  bash: `# dtc completion for bash: source <(dtc completion bash)
_dtc() {
  local IFS=$'\\n'
  COMPREPLY=( $(compgen -W "$(dtc __complete "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" -- "\${COMP_WORDS[COMP_CWORD]}") )
}
complete -o default -F _dtc dtc`,
  zsh: `#compdef dtc
# dtc completion for zsh: source <(dtc completion zsh)
_dtc() {
  local -a words_
  words_=("\${(@f)$(dtc __complete "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -a words_
}
compdef _dtc dtc`,
  fish: `# dtc completion for fish: dtc completion fish | source
complete -c dtc -f -a '(dtc __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'`,
};

export function registerCompletion(cli: Cli): void {
  cli.program
    .command("completion")
    .description("Print the shell completion script (bash, zsh or fish)")
    .argument("<shell>", "bash, zsh or fish")
    .addHelpText(
      "after",
      `
Examples:
  source <(dtc completion bash)        # in ~/.bashrc
  source <(dtc completion zsh)         # in ~/.zshrc
  dtc completion fish > ~/.config/fish/completions/dtc.fish`,
    )
    .action((shell: string) => {
      const script = SCRIPTS[shell];
      if (!script) throw usageError(`no completion for "${shell}": bash, zsh or fish`);
      print(script);
    });

  cli.program
    .command("__complete", { hidden: true })
    .argument("[words...]")
    .allowUnknownOption()
    .helpOption(false)
    .action(async () => {
      // Raw: the words may be options of other commands, which commander would take for this one's.
      const words = process.argv.slice(process.argv.indexOf("__complete") + 1);
      const current = words.at(-1) ?? "";
      print(
        (await candidates(cli, words.length ? words : [""])).filter((w) => w.startsWith(current)).join("\n"),
      );
    });
}
