use super::*;

#[test]
fn history_limit_defaults_and_bounds() {
    assert_eq!(history_limit(0).unwrap(), DEFAULT_HISTORY_LIMIT);
    assert_eq!(history_limit(MAX_HISTORY_LIMIT).unwrap(), MAX_HISTORY_LIMIT);
    let e = history_limit(MAX_HISTORY_LIMIT + 1).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("maximum 10000"), "{e:?}");
}

#[test]
fn probe_wait_and_pause_bounds() {
    assert_eq!(probe_wait(0).unwrap(), DEFAULT_PROBE_WAIT);
    assert_eq!(probe_wait(1500).unwrap(), Duration::from_millis(1500));
    assert!(probe_wait(u64::MAX).is_err());
    assert_eq!(pause_duration(0).unwrap(), None);
    assert_eq!(
        pause_duration(60_000).unwrap(),
        Some(Duration::from_secs(60))
    );
    assert!(pause_duration(MAX_PAUSE.as_millis() as u64 + 1).is_err());
}

#[test]
fn text_is_bounded_and_single_line() {
    assert_eq!(text("reason", "  upgrade ", 10).unwrap(), "upgrade");
    assert!(text("reason", "x".repeat(11).as_str(), 10).is_err());
    assert!(text("reason", "a\nb", 10).is_err());
}
