//! `ftsctl segments`: the rows of `gp_segment_configuration` with problem flags and the last
//! probe; `--down`, `--unbalanced` and `--mirrors` filter them.

use super::*;

/// `segments`.
pub(super) async fn run(
    cli: &Cli,
    ctx: &Ctx,
    down: bool,
    mirrors: bool,
    unbalanced: bool,
) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let mut r = conn
        .read(|mut c| async move { c.segments(proto::SegmentsRequest {}).await })
        .await?;
    // --down and --unbalanced select problems (either one, like gpstate -e);
    // --mirrors narrows to mirror rows.
    let problems = down || unbalanced;
    r.segments.retain(|s| {
        (!problems || (down && s.down) || (unbalanced && s.not_preferred_role))
            && (!mirrors || s.role == "m")
    });
    // The coordinator pair follows the filters too: shown unfiltered, or with --down when a
    // server of it is unreachable.
    let coordinator_down = r
        .coordinator
        .as_ref()
        .is_some_and(|c| c.acting_status == "unreachable" || c.standby_status == "unreachable");
    if (problems && !(down && coordinator_down)) || mirrors {
        r.coordinator = None;
    }
    ctx.emit(&r, || {
        let mut out = ctx.segments_text(&r.segments);
        if let Some(c) = &r.coordinator {
            out.push('\n');
            out.push_str(&ctx.coordinator_text(c));
        }
        out
    });
    Ok(exit::OK)
}

impl Ctx {
    /// The coordinator pair like `gpstate -f`: each server's address, role and state, the
    /// standby's sync state and replay lag.
    pub(super) fn coordinator_text(&self, c: &proto::CoordinatorPair) -> String {
        let status_color = |s: &str| match s {
            "unreachable" => Color::Red,
            _ => Color::Plain,
        };
        let lag = if c.replay_lag >= 0 {
            format!("{} B", c.replay_lag)
        } else {
            "-".into()
        };
        let mut standby_note = Vec::new();
        if c.rebuild {
            standby_note.push("former coordinator: rebuild it as a standby (gpinitstandby)");
        }
        if c.intent_pending {
            standby_note.push("promotion pending");
        }
        let rows = vec![
            vec![
                "-1".into(),
                "coordinator".into(),
                c.acting.clone().into(),
                cell(&c.acting_status, status_color(&c.acting_status)),
                "-".into(),
                "-".into(),
                c.decision.clone().into(),
            ],
            vec![
                "-1".into(),
                "standby".into(),
                c.standby.clone().into(),
                cell(&c.standby_status, status_color(&c.standby_status)),
                cell(
                    &c.sync,
                    if c.sync == "in sync" {
                        Color::Plain
                    } else {
                        Color::Yellow
                    },
                ),
                lag.into(),
                if standby_note.is_empty() {
                    "-".to_string()
                } else {
                    standby_note.join("; ")
                }
                .into(),
            ],
        ];
        render(
            self.style,
            &[
                "CONTENT",
                "ROLE",
                "ADDRESS",
                "STATUS",
                "SYNC",
                "REPLAY LAG",
                "NOTE",
            ],
            &rows,
        )
    }

    pub(super) fn segments_text(&self, segments: &[proto::Segment]) -> String {
        let rows: Vec<Vec<Cell>> = segments
            .iter()
            .map(|s| {
                let mut flags = Vec::new();
                if s.down {
                    flags.push("down");
                }
                if s.not_preferred_role {
                    flags.push("not-preferred-role");
                }
                if s.not_in_sync {
                    flags.push("not-in-sync");
                }
                let flag_color = if s.down {
                    Color::Red
                } else if flags.is_empty() {
                    Color::Plain
                } else {
                    Color::Yellow
                };
                let probe = if s.last_probe.is_empty() {
                    "-".to_string()
                } else {
                    format!("{} ({} ms)", s.last_probe, s.last_probe_ms)
                };
                vec![
                    s.content.to_string().into(),
                    s.dbid.to_string().into(),
                    s.role.clone().into(),
                    s.preferred_role.clone().into(),
                    cell(&s.status, if s.down { Color::Red } else { Color::Plain }),
                    s.mode.clone().into(),
                    format!("{}:{}", s.address, s.port).into(),
                    cell(
                        if flags.is_empty() {
                            "-".to_string()
                        } else {
                            flags.join(",")
                        },
                        flag_color,
                    ),
                    probe.into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "CONTENT",
                "DBID",
                "ROLE",
                "PREFERRED",
                "STATUS",
                "MODE",
                "ADDRESS",
                "FLAGS",
                "LAST PROBE",
            ],
            &rows,
        )
    }
}
