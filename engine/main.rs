//! The `planrun` command line.
//!
//! To add a subcommand: add a variant to [`Command`] and an arm to [`run`].

mod cli;

use cli::commands;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use planrun::plan::{self, PlanError};

const EXAMPLES: &str = "\
Examples:
  planrun plan plans/migrate.toml
  planrun apply plans/migrate.toml
  planrun plan plans/migrate.toml -o reviewed.json && planrun apply reviewed.json
  planrun validate plans/migrate.toml
  planrun graph plans/migrate.toml --format mermaid
  planrun schema > schemas/plan.schema.json
  planrun completions bash > ~/.local/share/bash-completion/completions/planrun

Exit codes: 0 ok, 1 error (e.g. unreadable file, a failed step), 2 invalid plan,
130 interrupted (progress is recorded; apply again to resume).";

/// Declarative migration plans for Milvus: validate, preview, run and resume.
#[derive(Debug, Parser)]
#[command(name = "planrun", version, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output (-v info, and the libraries' warnings; -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Progress {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Plain,
    /// One JSON object per event on stderr.
    Json,
}

/// Where recorded runs are looked up.
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// The plan whose `settings.state_dir` holds the runs.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// The state dir itself (default: `.planrun` here).
    #[arg(long, env = "PLANRUN_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ApplyFlags {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Abandon an unfinished run of a changed plan (or re-run a finished one) from the start.
    #[arg(long)]
    restart: bool,
    /// How progress is shown on stderr.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    progress: Progress,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what apply would do: connects and inspects, changes nothing.
    #[command(after_help = "\
Examples:
  planrun plan plans/migrate.toml
  planrun plan plans/migrate.toml --json | jq .summary
  planrun plan plans/migrate.toml --detailed-exitcode; echo $?
  planrun plan plans/migrate.toml -o reviewed.json

Per step: the collections, partitions, segments, rows, objects and bytes it would move, what an
unfinished run already did, and conflicts (existing target, existing backup, unreachable server).
With --detailed-exitcode: 0 nothing to do, 2 changes to apply, 1 error or conflict.
With -o FILE the preview is also saved, with the plan's fingerprint, for `planrun apply FILE` to
run exactly that; a plan with conflicts is not saved.
The JSON shape is versioned and documented in docs/plan-output.md.")]
    Plan {
        /// The plan file (TOML).
        plan: PathBuf,
        /// Print the preview as JSON (see docs/plan-output.md).
        #[arg(long)]
        json: bool,
        /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on errors.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also save this preview to FILE, for `planrun apply FILE` (see docs/plan-output.md).
        #[arg(short, long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Run a plan, or resume its unfinished run.
    #[command(after_help = "\
Examples:
  planrun apply plans/migrate.toml
  planrun apply --yes --progress plain plans/migrate.toml
  planrun apply --restart plans/migrate.toml
  planrun apply reviewed.json

Shows the plan first and asks on a terminal. A plan saved by `planrun plan -o FILE` is not shown
or asked about again: it runs only if its plan file is unchanged and a fresh preview says what
the saved one said, else it is refused (exit 1), naming each difference. Every finished piece of work is recorded in the
state dir; a run stopped at any point (Ctrl-C, kill -9, a failure) resumes with the next apply.
Exit codes: 0 done, 1 failed, 2 invalid plan, 130 interrupted.")]
    Apply {
        /// The plan file (TOML), or a plan saved by `planrun plan -o FILE`.
        plan: PathBuf,
        #[command(flatten)]
        flags: ApplyFlags,
    },
    /// Resume a recorded run (its plan must be unchanged).
    #[command(after_help = "\
Examples:
  planrun runs --plan plans/migrate.toml
  planrun resume 7f3c1a2b --plan plans/migrate.toml")]
    Resume {
        /// The run id, or a unique prefix of it.
        run: String,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        flags: ApplyFlags,
    },
    /// List the recorded runs.
    #[command(after_help = "\
Examples:
  planrun runs --plan plans/migrate.toml
  planrun runs --state-dir plans/.planrun")]
    Runs {
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show a run step by step (default: the newest).
    #[command(after_help = "\
Examples:
  planrun status --plan plans/migrate.toml
  planrun status 7f3c1a2b --plan plans/migrate.toml")]
    Status {
        /// The run id, or a unique prefix of it.
        run: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Check a plan offline and print its steps and dependencies.
    #[command(after_help = "\
Examples:
  planrun validate plans/migrate.toml
  MILVUS_A_PASSWORD=secret planrun validate plans/migrate.toml

Every error of the file is reported, each with its line and column. Exit code 2 when the plan is invalid.")]
    Validate {
        /// The plan file (TOML).
        plan: PathBuf,
    },
    /// Print the step graph of a plan.
    #[command(after_help = "\
Examples:
  planrun graph plans/migrate.toml | dot -Tsvg > plan.svg
  planrun graph plans/migrate.toml --format mermaid

Solid edges come from locations (a step reads what another writes), dashed ones from `needs`.")]
    Graph {
        /// The plan file (TOML).
        plan: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the plan format.
    #[command(after_help = "\
Examples:
  planrun schema > schemas/plan.schema.json

Plans that start with `#:schema ../schemas/plan.schema.json` get completion in editors (taplo, Even Better TOML).")]
    Schema,
    /// Print shell completions.
    #[command(after_help = "\
Examples:
  planrun completions bash > ~/.local/share/bash-completion/completions/planrun
  planrun completions zsh > ~/.zfunc/_planrun
  planrun completions fish > ~/.config/fish/completions/planrun.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A failure: the report to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub report: miette::Report,
    pub code: u8,
}

/// A failure said in planrun's words, exit code 1.
pub(crate) fn fail(msg: impl std::fmt::Display) -> Failure {
    Failure {
        report: miette::miette!("{msg}"),
        code: 1,
    }
}

impl From<PlanError> for Failure {
    fn from(e: PlanError) -> Self {
        Failure {
            code: e.exit_code(),
            report: miette::Report::new(e),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure {
            code: 1,
            report: miette::miette!("cannot write output: {e}"),
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Plan {
            plan: path,
            json,
            detailed_exitcode,
            out,
        } => return commands::plan(&path, json, detailed_exitcode, out.as_deref()),
        Command::Apply { plan: path, flags } => return commands::apply(&path, &flags.into()),
        Command::Resume { run, state, flags } => {
            let dir = commands::state_dir(state.plan.as_deref(), state.state_dir)?;
            return commands::resume(&dir, &run, &flags.into());
        }
        Command::Runs { state } => {
            let dir = commands::state_dir(state.plan.as_deref(), state.state_dir)?;
            return commands::runs(&dir);
        }
        Command::Status { run, state } => {
            let dir = commands::state_dir(state.plan.as_deref(), state.state_dir)?;
            return commands::status(&dir, run.as_deref());
        }
        Command::Validate { plan: path } => {
            let c = plan::load(&path)?;
            let edges = c.dag.edges();
            writeln!(
                out,
                "plan `{}` is valid: {} step{}, {} edge{}",
                c.plan.name,
                c.plan.steps.len(),
                plural(c.plan.steps.len()),
                edges.len(),
                plural(edges.len())
            )?;
            let width = c.plan.steps.iter().map(|s| s.id.len()).max().unwrap_or(0);
            for id in c.dag.order() {
                let step = c.plan.step(id).expect("dag nodes are plan steps");
                write!(out, "  {id:width$}  {}", c.plan.describe_step(step))?;
                let deps = c.dag.dependencies(id);
                if !deps.is_empty() {
                    let why: Vec<String> = deps
                        .iter()
                        .map(|d| {
                            let e = c.dag.edge(d, id).expect("listed dependency has an edge");
                            format!("{d} ({})", e.reason())
                        })
                        .collect();
                    write!(out, "\n  {:width$}    after {}", "", why.join(", "))?;
                }
                writeln!(out)?;
            }
            for note in c.dag.notes() {
                writeln!(out, "note: {note}")?;
            }
        }
        Command::Graph { plan: path, format } => {
            let c = plan::load(&path)?;
            let text = match format {
                GraphFormat::Dot => c.dag.to_dot(),
                GraphFormat::Mermaid => c.dag.to_mermaid(),
            };
            out.write_all(text.as_bytes())?;
        }
        Command::Schema => out.write_all(plan::schema_json().as_bytes())?,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "planrun", &mut out);
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl From<ApplyFlags> for cli::apply::ApplyArgs {
    fn from(f: ApplyFlags) -> Self {
        cli::apply::ApplyArgs {
            yes: f.yes,
            restart: f.restart,
            style: match f.progress {
                Progress::Auto => cli::report::Style::Auto,
                Progress::Plain => cli::report::Style::Plain,
                Progress::Json => cli::report::Style::Json,
            },
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn init_logging(verbose: u8, format: LogFormat, color: bool) {
    let level = match verbose {
        // Libraries' own warnings (the AWS SDK's dumps of an HTTP answer, sled's errors before
        // planrun explains them) wait for -v: what a user needs is said in planrun's words.
        0 => "planrun=warn",
        1 => "warn,planrun=info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLANRUN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Scrubbed(std::io::stderr()));
    // A second init (tests) is harmless: ignore the error.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(color).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Log output, scrubbed of every secret and env value before it reaches stderr: libraries
/// (the AWS SDK at debug level prints the access key id) log what planrun never would.
struct Scrubbed(std::io::Stderr);

impl std::io::Write for Scrubbed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole event per write, so a value is never split.
        let text = String::from_utf8_lossy(buf);
        self.0
            .write_all(planrun::secret::scrub_logged(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
fn use_color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = use_color();
    init_logging(cli.verbose, cli.log_format, color);
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprint!("{}", plan::render(f.report.as_ref(), 100, color));
            ExitCode::from(f.code)
        }
    }
}
