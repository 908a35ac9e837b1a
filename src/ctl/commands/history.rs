//! `ftsctl history`: `gp_configuration_history` joined with ftsd's evidence, filtered by
//! content, dbid and `--since`.

use super::*;

/// `history`. A bad `--since` is rejected before anything is contacted.
pub(super) async fn run(
    cli: &Cli,
    ctx: &Ctx,
    content: Option<i32>,
    dbid: Option<i32>,
    since: Option<&str>,
    limit: u32,
) -> Outcome {
    let since_ms = match since {
        Some(s) => crate::api::convert::ms(parse_since(s)?),
        None => 0,
    };
    let mut conn = connect_any(cli).await?;
    let req = proto::HistoryRequest {
        content,
        dbid,
        since_ms,
        limit,
    };
    let r = conn
        .read(|mut c| async move { c.history(req).await })
        .await?;
    ctx.emit(&r, || ctx.history_text(&r.entries));
    Ok(exit::OK)
}

/// `--since`: a duration ago, or an RFC 3339 time.
pub fn parse_since(s: &str) -> Result<SystemTime, CtlError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| CtlError {
        code: exit::USAGE,
        message: format!(
            "--since {s:?}: expected a duration (1h, 30m) or a time (2026-01-31T12:00:00Z)"
        ),
    })
}

impl Ctx {
    pub(super) fn history_text(&self, entries: &[proto::HistoryEntry]) -> String {
        if entries.is_empty() {
            return "no history\n".into();
        }
        let rows: Vec<Vec<Cell>> = entries
            .iter()
            .map(|e| {
                vec![
                    time_only(e.time_ms).into(),
                    if e.content < -1 {
                        "?".to_string().into()
                    } else {
                        e.content.to_string().into()
                    },
                    e.dbid.to_string().into(),
                    if e.rule.is_empty() {
                        "-".to_string().into()
                    } else {
                        e.rule.clone().into()
                    },
                    if e.epoch > 0 {
                        e.epoch.to_string().into()
                    } else {
                        "-".to_string().into()
                    },
                    if e.instance_id.is_empty() {
                        "-".to_string().into()
                    } else {
                        e.instance_id.clone().into()
                    },
                    e.desc.clone().into(),
                ]
            })
            .collect();
        render(
            self.style,
            &[
                "TIME",
                "CONTENT",
                "DBID",
                "RULE",
                "EPOCH",
                "BY",
                "DESCRIPTION",
            ],
            &rows,
        )
    }
}
