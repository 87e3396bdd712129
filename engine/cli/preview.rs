//! The preview for people: one block per step, then a summary line.

use planrun::exec::preview::Preview;
use planrun::text::{human_bytes, short};

pub fn render(p: &Preview) -> String {
    let mut s = String::new();
    if let Some(r) = &p.resumes {
        s += &format!(
            "An unfinished run {} of this plan exists: apply resumes it ({} tasks already done).\n\n",
            short(&r.id),
            r.tasks_done
        );
    }
    for st in &p.steps {
        let mark = match st.action.as_str() {
            "done" => "=",
            "resume" => "~",
            _ => "+",
        };
        s += &format!("{mark} {} ({}): {}\n", st.id, st.kind, st.description);
        if st.action == "done" && p.resumes.is_some() {
            s += "    already done in the unfinished run\n";
        }
        for c in &st.changes {
            s += &format!("    {c}\n");
        }
        let c = &st.counts;
        let parts: Vec<String> = [
            (c.collections, "collections"),
            (c.partitions, "partitions"),
            (c.segments, "segments"),
            (c.rows, "rows"),
            (c.objects, "objects"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .chain((c.bytes > 0).then(|| human_bytes(c.bytes)))
        .collect();
        if !parts.is_empty() {
            let approx = if st.estimated { "about " } else { "" };
            s += &format!("    {approx}{}\n", parts.join(", "));
        }
        for c in &st.conflicts {
            s += &format!("    ! {c}\n");
        }
    }
    s += &format!(
        "\nPlan: {} step(s) to run, {} already done, {} conflict(s).\n",
        p.summary.steps_to_run, p.summary.steps_done, p.summary.conflicts
    );
    s
}
