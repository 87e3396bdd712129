//! The step graph: a `Plan` compiled into a DAG of steps with explicit and inferred edges.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use super::location::Location;
use super::model::Plan;

/// Why a step depends on another. Edges point from the dependency to the dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The dependent lists the dependency in `needs`.
    pub needs: bool,
    /// The dependent reads `read`, which overlaps `written` (written by the dependency).
    pub locations: Vec<(Location, Location)>,
    /// Display text for the location reason, secrets masked.
    label: String,
}

impl Edge {
    /// `needs`, a location, or both: a short text for output.
    pub fn reason(&self) -> String {
        match (self.needs, self.label.is_empty()) {
            (true, true) => "needs".into(),
            (true, false) => format!("needs, {}", self.label),
            (false, _) => self.label.clone(),
        }
    }
}

/// A dependency cycle, as a closed path: `[a, b, c]` means a → b → c → a.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: Vec<String>,
}

/// The steps of a plan and their dependencies. Acyclic by construction.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<String, Edge>,
    index: HashMap<String, NodeIndex>,
    types: Vec<&'static str>,
    existing: Vec<(String, Location, String)>,
}

impl Dag {
    /// Builds the graph: `needs` edges plus location edges (a step that reads a location depends
    /// on every step that writes the same location, or one inside or around it).
    pub fn build(plan: &Plan) -> Result<Dag, Vec<Cycle>> {
        let mut graph = DiGraph::with_capacity(plan.steps.len(), plan.steps.len() * 2);
        let mut index = HashMap::with_capacity(plan.steps.len());
        let mut types = Vec::with_capacity(plan.steps.len());
        for s in &plan.steps {
            index.insert(s.id.clone(), graph.add_node(s.id.clone()));
            types.push(s.type_name);
        }
        let mut existing = Vec::new();
        let add = |graph: &mut DiGraph<String, Edge>, from: NodeIndex, to: NodeIndex| match graph
            .find_edge(from, to)
        {
            Some(e) => e,
            None => graph.add_edge(
                from,
                to,
                Edge {
                    needs: false,
                    locations: vec![],
                    label: String::new(),
                },
            ),
        };
        for s in &plan.steps {
            let me = index[&s.id];
            for n in &s.needs {
                // Unknown ids were rejected while resolving the plan.
                if let Some(&dep) = index.get(n) {
                    let e = add(&mut graph, dep, me);
                    graph[e].needs = true;
                }
            }
            for read in s.kind.reads() {
                let mut provided = false;
                for w in &plan.steps {
                    if w.id == s.id {
                        continue;
                    }
                    for written in w.kind.writes() {
                        if written.overlaps(read) {
                            provided = true;
                            let e = add(&mut graph, index[&w.id], me);
                            let edge = &mut graph[e];
                            edge.locations.push((written.clone(), read.clone()));
                            if edge.label.is_empty() {
                                edge.label = plan.show_location(read);
                            }
                        }
                    }
                }
                if !provided {
                    existing.push((s.id.clone(), read.clone(), plan.show_location(read)));
                }
            }
        }
        let dag = Dag {
            graph,
            index,
            types,
            existing,
        };
        let cycles = dag.cycles();
        if cycles.is_empty() {
            Ok(dag)
        } else {
            Err(cycles)
        }
    }

    fn cycles(&self) -> Vec<Cycle> {
        let mut out = Vec::new();
        for scc in petgraph::algo::tarjan_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let start = *members.first().expect("scc is not empty");
            // Shortest way around: BFS from `start` inside the component back to it.
            let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
            let mut queue = VecDeque::from([start]);
            let mut last = None;
            'bfs: while let Some(n) = queue.pop_front() {
                let mut next: Vec<NodeIndex> = self.graph.neighbors(n).collect();
                next.sort();
                for m in next {
                    if m == start {
                        last = Some(n);
                        break 'bfs;
                    }
                    if members.contains(&m) && !parent.contains_key(&m) {
                        parent.insert(m, n);
                        queue.push_back(m);
                    }
                }
            }
            let mut path = Vec::new();
            let mut cur = last.expect("a strongly connected component has a cycle");
            while cur != start {
                path.push(self.graph[cur].clone());
                cur = parent[&cur];
            }
            path.push(self.graph[start].clone());
            path.reverse();
            out.push(Cycle { path });
        }
        out.sort_by_key(|c| self.index[&c.path[0]]);
        out
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Step ids in an order that respects every edge; ties broken by file order.
    pub fn order(&self) -> Vec<&str> {
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(Reverse)
            .collect();
        let mut out = Vec::with_capacity(self.len());
        while let Some(Reverse(n)) = ready.pop() {
            out.push(self.graph[n].as_str());
            for m in self.graph.neighbors(n) {
                indegree[m.index()] -= 1;
                if indegree[m.index()] == 0 {
                    ready.push(Reverse(m));
                }
            }
        }
        out
    }

    /// The steps `id` depends on directly, in file order.
    pub fn dependencies(&self, id: &str) -> Vec<&str> {
        self.adjacent(id, Direction::Incoming)
    }

    /// The steps that depend directly on `id`, in file order.
    pub fn dependents(&self, id: &str) -> Vec<&str> {
        self.adjacent(id, Direction::Outgoing)
    }

    fn adjacent(&self, id: &str, dir: Direction) -> Vec<&str> {
        let Some(&n) = self.index.get(id) else {
            return vec![];
        };
        let mut v: Vec<NodeIndex> = self.graph.neighbors_directed(n, dir).collect();
        v.sort();
        v.into_iter().map(|m| self.graph[m].as_str()).collect()
    }

    /// The edge from `dependency` to `dependent`, if any.
    pub fn edge(&self, dependency: &str, dependent: &str) -> Option<&Edge> {
        let (a, b) = (self.index.get(dependency)?, self.index.get(dependent)?);
        self.graph.find_edge(*a, *b).map(|e| &self.graph[e])
    }

    /// Every edge as (dependency, dependent, why), in file order of the dependent.
    pub fn edges(&self) -> Vec<(&str, &str, &Edge)> {
        let mut v: Vec<_> = self
            .graph
            .edge_indices()
            .map(|e| {
                let (a, b) = self.graph.edge_endpoints(e).expect("edge exists");
                (b, a, e)
            })
            .collect();
        v.sort();
        v.into_iter()
            .map(|(b, a, e)| {
                (
                    self.graph[a].as_str(),
                    self.graph[b].as_str(),
                    &self.graph[e],
                )
            })
            .collect()
    }

    /// Reads no step provides: (step id, location). Taken as existing backups.
    pub fn existing_inputs(&self) -> Vec<(&str, &Location)> {
        self.existing
            .iter()
            .map(|(s, l, _)| (s.as_str(), l))
            .collect()
    }

    /// Lines like "restore reads existing backup at bucket_b:backup/x" (secrets masked).
    pub fn notes(&self) -> Vec<String> {
        self.existing
            .iter()
            .map(|(s, _, shown)| format!("step `{s}` reads existing backup at {shown}"))
            .collect()
    }

    /// Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph plan {\n  rankdir=LR;\n  node [shape=box];\n");
        for n in self.graph.node_indices() {
            let id = &self.graph[n];
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\\n({})\"];",
                dot_escape(id),
                dot_escape(id),
                self.types[n.index()]
            );
        }
        for (a, b, e) in self.edges() {
            let style = if e.locations.is_empty() {
                ", style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"{style}];",
                dot_escape(a),
                dot_escape(b),
                dot_escape(&e.reason())
            );
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for n in self.graph.node_indices() {
            let _ = writeln!(
                out,
                "  s{}[\"{} ({})\"]",
                n.index(),
                mermaid_escape(&self.graph[n]),
                self.types[n.index()]
            );
        }
        for (a, b, e) in self.edges() {
            let arrow = if e.locations.is_empty() {
                "-.->"
            } else {
                "-->"
            };
            let _ = writeln!(
                out,
                "  s{} {arrow}|\"{}\"| s{}",
                self.index[a].index(),
                mermaid_escape(&e.reason()),
                self.index[b].index()
            );
        }
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}
