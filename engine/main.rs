//! The `planrun` command line.
//!
//! To add a subcommand: add a variant to [`Command`] and an arm to [`run`].

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use planrun::plan::{self, PlanError};

const EXAMPLES: &str = "\
Examples:
  planrun validate plans/migrate.toml
  planrun graph plans/migrate.toml --format mermaid
  planrun schema > schemas/plan.schema.json
  planrun completions bash > ~/.local/share/bash-completion/completions/planrun

Exit codes: 0 ok, 1 error (e.g. unreadable file), 2 invalid plan.";

/// Declarative migration plans for Milvus: validate, preview, run and resume.
#[derive(Debug, Parser)]
#[command(name = "planrun", version, after_help = EXAMPLES)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace).
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

#[derive(Debug, Subcommand)]
enum Command {
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
struct Failure {
    report: miette::Report,
    code: u8,
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn init_logging(verbose: u8, format: LogFormat, color: bool) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLANRUN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: ignore the error.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(color).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
