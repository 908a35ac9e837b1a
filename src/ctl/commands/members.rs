//! `ftsctl members`: the ftsd instances registered in etcd, with their role and last cycle.

use super::status::status;
use super::*;

/// `members`.
pub(super) async fn run(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let s = status(&mut conn).await?;
    let doc = json!({ "members": s.members });
    ctx.emit(&doc, || ctx.members_text(&s.members));
    Ok(exit::OK)
}

impl Ctx {
    pub(super) fn members_text(&self, members: &[proto::Member]) -> String {
        let rows: Vec<Vec<Cell>> = members
            .iter()
            .map(|m| {
                vec![
                    m.instance_id.clone().into(),
                    cell(
                        &m.role,
                        if m.role == "leader" {
                            Color::Green
                        } else {
                            Color::Plain
                        },
                    ),
                    if m.epoch > 0 {
                        m.epoch.to_string().into()
                    } else {
                        "-".into()
                    },
                    m.host.clone().into(),
                    m.api_address.clone().into(),
                    m.version.clone().into(),
                    time_only(m.last_cycle_at_ms).into(),
                    if m.last_cycle_at_ms > 0 {
                        format!("{} ms", m.last_cycle_ms).into()
                    } else {
                        "-".into()
                    },
                    m.last_cycle_result.clone().into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "MEMBER",
                "ROLE",
                "EPOCH",
                "HOST",
                "API",
                "VERSION",
                "LAST CYCLE",
                "TOOK",
                "RESULT",
            ],
            &rows,
        )
    }
}
