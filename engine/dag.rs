//! The step graph: a `Plan` compiled into a DAG of steps with explicit and inferred edges.
