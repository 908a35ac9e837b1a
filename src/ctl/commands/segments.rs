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
    ctx.emit(&r, || ctx.segments_text(&r.segments));
    Ok(exit::OK)
}

impl Ctx {
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
