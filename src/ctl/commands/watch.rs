//! `ftsctl watch`: `status` and `segments`, redrawn every interval.

use super::status::{status, status_code};
use super::*;

/// `watch`: status and segments, redrawn every `interval`; a failed refresh is shown and
/// retried rather than ending the view.
pub(super) async fn run(cli: &Cli, ctx: &Ctx, interval: Duration, iterations: u64) -> Outcome {
    let mut n = 0u64;
    let tty = std::io::stdout().is_terminal();
    let mut last;
    loop {
        n += 1;
        let frame = async {
            let mut conn = connect_any(cli).await?;
            let s = status(&mut conn).await?;
            let segs = conn
                .read(|mut c| async move { c.segments(proto::SegmentsRequest {}).await })
                .await?;
            Ok::<_, CtlError>((conn.address.clone(), s, segs))
        }
        .await;
        if tty && !ctx.json {
            print!("\x1b[2J\x1b[H");
        }
        match frame {
            Ok((address, s, segs)) => {
                last = status_code(&s);
                if ctx.json {
                    let doc = json!({ "status": s, "segments": segs.segments });
                    println!("{}", serde_json::to_string(&doc).unwrap_or_default());
                } else {
                    println!(
                        "ftsctl watch: {address}, every {}  ({})\n",
                        humantime::format_duration(interval),
                        humantime::format_rfc3339_seconds(SystemTime::now())
                    );
                    print!("{}", ctx.status_text(&s));
                    println!();
                    print!("{}", ctx.segments_text(&segs.segments));
                }
            }
            Err(e) => {
                last = e.code;
                if ctx.json {
                    println!("{}", json!({ "error": e.message }));
                } else {
                    println!("ftsctl: {}", e.message);
                }
            }
        }
        if iterations > 0 && n >= iterations {
            return Ok(last);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(last),
        }
    }
}
