//! `ftsctl shadow`: how a shadow instance's decisions compared with the incumbent FTS.

use super::*;

/// `shadow`: exits 1 when any divergence was seen.
pub(super) async fn run(cli: &Cli, ctx: &Ctx) -> Outcome {
    let mut conn = connect_any(cli).await?;
    let r = conn
        .read(|mut c| async move { c.shadow(proto::ShadowRequest {}).await })
        .await?;
    ctx.emit(&r, || ctx.shadow_text(&r));
    Ok(if diverged(&r) {
        exit::UNHEALTHY
    } else {
        exit::OK
    })
}

fn diverged(r: &proto::ShadowResponse) -> bool {
    r.incumbent_only + r.shadow_only + r.different > 0
}

impl Ctx {
    fn shadow_text(&self, r: &proto::ShadowResponse) -> String {
        let window = humantime::format_duration(Duration::from_millis(r.window_ms));
        let mut out = format!(
            "shadow {}: {} agree, {} incumbent only, {} shadow only, {} different \
             (window {window}; waiting: {} expected, {} to judge)\n",
            r.instance_id,
            self.yes_no(false, &r.agree.to_string()),
            self.yes_no(r.incumbent_only > 0, &r.incumbent_only.to_string()),
            self.yes_no(r.shadow_only > 0, &r.shadow_only.to_string()),
            self.yes_no(r.different > 0, &r.different.to_string()),
            r.expecting,
            r.judging,
        );
        if r.recent.is_empty() {
            out.push_str("no transitions judged yet\n");
            return out;
        }
        let rows: Vec<Vec<Cell>> = r
            .recent
            .iter()
            .map(|v| {
                vec![
                    time_only(v.at_ms).into(),
                    cell(
                        &v.verdict,
                        if v.verdict == "agree" {
                            Color::Green
                        } else {
                            Color::Red
                        },
                    ),
                    v.content.to_string().into(),
                    v.first.clone().into(),
                    if v.shadow_rule.is_empty() {
                        "-".into()
                    } else {
                        v.shadow_rule.clone().into()
                    },
                    v.shadow.clone().into(),
                    v.incumbent.clone().into(),
                ]
            })
            .collect();
        out.push_str(&render(
            self.style,
            &[
                "TIME",
                "VERDICT",
                "CONTENT",
                "FIRST",
                "SHADOW RULE",
                "SHADOW WOULD WRITE",
                "INCUMBENT WROTE",
            ],
            &rows,
        ));
        out
    }
}
