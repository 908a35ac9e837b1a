use super::*;

#[test]
fn refuses_files_without_the_expected_item() {
    assert!(certificates(b"")
        .unwrap_err()
        .contains("no PEM certificate"));
    assert!(certificates(b"hello")
        .unwrap_err()
        .contains("no PEM certificate"));
    let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert!(certificates(broken).is_err());
    assert!(private_key(b"junk")
        .unwrap_err()
        .contains("no PEM private key"));
}

#[test]
fn names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    let e = read_certificates(&path).unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(e.to_string().contains("cannot read"), "{e}");
    assert!(e.to_string().contains("No such file"), "{e}");
    std::fs::write(&path, "not a certificate").unwrap();
    let e = read_certificates(&path).unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
}
