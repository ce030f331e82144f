//! Tests of `keyfile.rs`: the key file in Synapse's exact format, import, the keyring.
use super::super::keys::{SigningKey, B64};
use super::super::FederationError;
use super::*;
use serde_json::json;

#[test]
fn key_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/signing.key");
    let first = SigningKey::load_or_generate(&path).unwrap();
    let version = first.key_id().strip_prefix("ed25519:").unwrap();
    assert!(version.starts_with("a_") && version.len() == 6, "{version}");

    let text = std::fs::read_to_string(&path).unwrap();
    let fields: Vec<&str> = text.trim_end().split(' ').collect();
    assert_eq!(fields.len(), 3, "{text:?}");
    assert_eq!(fields[0], "ed25519");
    assert_eq!(fields[1], version);
    assert_eq!(fields[2].len(), 43);
    assert!(text.ends_with('\n') && !text.contains('='));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary file left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    let again = SigningKey::load_or_generate(&path).unwrap();
    assert_eq!(again.key_id(), first.key_id());
    assert_eq!(again.public_key_base64(), first.public_key_base64());
    assert_eq!(again.sign_bytes(b"x"), first.sign_bytes(b"x"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn key_file_written_by_synapse_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.signing.key");
    // Synapse writes no trailing newline at times, and padding is tolerated on input.
    std::fs::write(&path, format!("ed25519 a_AbCd {}", B64.encode([9u8; 32]))).unwrap();
    let key = SigningKey::load_or_generate(&path).unwrap();
    assert_eq!(key.key_id(), "ed25519:a_AbCd");
    let expected = SigningKey::from_seed("a_AbCd", [9; 32]).unwrap();
    assert_eq!(key.public_key_base64(), expected.public_key_base64());

    std::fs::write(
        &path,
        "\ned25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1=\n\n",
    )
    .unwrap();
    let key = SigningKey::load_or_generate(&path).unwrap();
    let mut empty = json!({});
    key.sign_json("domain", &mut empty).unwrap();
    assert_eq!(
        empty["signatures"]["domain"]["ed25519:1"],
        json!("K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ")
    );
}

#[test]
fn malformed_key_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let seed = B64.encode([1u8; 32]);
    let bad = [
        String::new(),
        "\n \n".to_owned(),
        "garbage".to_owned(),
        format!("ed25519 {seed}"),
        format!("ed448 a_x {seed}"),
        format!("ed25519 a-x {seed}"),
        format!("ed25519 a_x {seed} extra"),
        "ed25519 a_x !!!notbase64!!!".to_owned(),
        format!("ed25519 a_x {}", B64.encode([1u8; 31])),
        format!("ed25519 a_x {}", B64.encode([1u8; 64])),
        format!("ed25519 a_x {seed}\nnot a key\n"),
    ];
    for content in bad {
        std::fs::write(&path, &content).unwrap();
        let err = SigningKey::load_or_generate(&path).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, FederationError::Key(_)), "{content:?}");
        assert!(message.contains("malformed"), "{message}");
        assert!(message.contains("signing.key"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
    }
}

#[test]
fn unreadable_key_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    assert!(matches!(
        SigningKey::load_or_generate(dir.path()),
        Err(FederationError::Key(_))
    ));
}

/// A key file as Synapse (signedjson `write_signing_keys`) writes it: `"%s %s %s\n" % (alg,
/// version, encode_base64(seed))`, unpadded standard base64.
fn synapse_file(keys: &[(&str, [u8; 32])]) -> String {
    keys.iter()
        .map(|(version, seed)| format!("ed25519 {version} {}\n", B64.encode(seed)))
        .collect()
}

#[test]
fn synapse_line_is_exactly_synapses_format_and_round_trips() {
    let key = SigningKey::from_seed("a_Xy9Z", [3; 32]).unwrap();
    let line = key.synapse_line();
    assert_eq!(line, synapse_file(&[("a_Xy9Z", [3; 32])]));
    assert_eq!(
        line,
        "ed25519 a_Xy9Z AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM\n"
    );
    // Read back, alone and appended to a Synapse key file (Synapse's key stays the first).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.key");
    std::fs::write(&path, &line).unwrap();
    let back = SigningKey::load_or_generate(&path).unwrap();
    assert_eq!(back.key_id(), "ed25519:a_Xy9Z");
    assert_eq!(back.public_key_base64(), key.public_key_base64());
    assert_eq!(back.synapse_line(), line);

    let merged = synapse_file(&[("a_Syn1", [4; 32])]) + &line;
    let keys = parse_key_file(&path, &merged).unwrap();
    let ids: Vec<&str> = keys.iter().map(SigningKey::key_id).collect();
    assert_eq!(ids, ["ed25519:a_Syn1", "ed25519:a_Xy9Z"]);
    assert_eq!(keys[1].public_key_base64(), key.public_key_base64());
    // A generated key file is one such line.
    let generated = dir.path().join("generated.key");
    let key = SigningKey::load_or_generate(&generated).unwrap();
    assert_eq!(
        std::fs::read_to_string(&generated).unwrap(),
        key.synapse_line()
    );
}

#[test]
fn a_file_of_several_keys_signs_with_the_first_as_synapse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.signing.key");
    std::fs::write(
        &path,
        format!(
            "\n{}\n",
            synapse_file(&[("a_one", [1; 32]), ("a_two", [2; 32])])
        ),
    )
    .unwrap();
    let key = SigningKey::load_or_generate(&path).unwrap();
    assert_eq!(key.key_id(), "ed25519:a_one");
    let first = SigningKey::from_seed("a_one", [1; 32]).unwrap();
    assert_eq!(key.public_key_base64(), first.public_key_base64());
}

#[test]
fn import_takes_synapses_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let synapse = dir.path().join("hs.signing.key");
    std::fs::write(
        &synapse,
        synapse_file(&[("a_HsKy", [8; 32]), ("a_old", [9; 32])]),
    )
    .unwrap();
    let ours = dir.path().join("ml/signing.key");

    // No key of ours yet: written, the first key only, 0600.
    let (key, count, done) = import(&synapse, &ours, false).unwrap();
    assert_eq!(
        (key.key_id(), count, done),
        ("ed25519:a_HsKy", 2, Imported::Written)
    );
    assert_eq!(
        std::fs::read_to_string(&ours).unwrap(),
        synapse_file(&[("a_HsKy", [8; 32])])
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&ours).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = SigningKey::load_or_generate(&ours).unwrap();
    assert_eq!(loaded.public_key_base64(), key.public_key_base64());

    // Again: nothing to do.
    let (_, _, done) = import(&synapse, &ours, false).unwrap();
    assert_eq!(done, Imported::Unchanged);

    // Our own generated key is not replaced without `replace`, and is kept as it was.
    std::fs::remove_file(&ours).unwrap();
    let generated = SigningKey::load_or_generate(&ours).unwrap();
    let before = std::fs::read_to_string(&ours).unwrap();
    let err = import(&synapse, &ours, false).unwrap_err().to_string();
    assert!(err.contains(generated.key_id()), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), before);
    let (_, _, done) = import(&synapse, &ours, true).unwrap();
    assert_eq!(done, Imported::Written);
    assert_eq!(
        SigningKey::load_or_generate(&ours).unwrap().key_id(),
        "ed25519:a_HsKy"
    );
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path().join("ml")).unwrap().count(), 1);

    // A malformed or missing source is refused and writes nothing.
    std::fs::write(&synapse, "ed25519 a_x notbase64!\n").unwrap();
    assert!(matches!(
        import(&synapse, &ours, true),
        Err(FederationError::Key(_))
    ));
    assert!(import(&dir.path().join("none"), &ours, true).is_err());
    assert_eq!(
        SigningKey::load_or_generate(&ours).unwrap().key_id(),
        "ed25519:a_HsKy"
    );
}

#[test]
fn keyring_gives_each_homeserver_its_key_falling_back_to_the_global_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = crate::config::Config::parse(&format!(
        r#"
[server]
bind = "127.0.0.1:0"
[database]
path = "{d}/db"
[federation]
signing_key_path = "{d}/global.key"
signing_key_paths = {{ "b.example" = "{d}/b.key" }}
[[homeservers]]
name = "a.example"
default = true
[[homeservers]]
name = "b.example"
[[homeservers]]
name = "c.example"
[[datastores]]
id = "local"
type = "file"
path = "{d}/media"
kinds = ["all"]
"#
    ))
    .unwrap();
    let ring = Keyring::load(&config).unwrap();
    let name = |n: &str| media_ledger_events::ServerName::parse_strict(n).unwrap();
    let (a, b, c) = (
        ring.for_server(&name("a.example")),
        ring.for_server(&name("b.example")),
        ring.for_server(&name("c.example")),
    );
    assert_eq!(a.public_key_base64(), c.public_key_base64());
    assert_ne!(a.public_key_base64(), b.public_key_base64());
    let global = SigningKey::load_or_generate(&dir.path().join("global.key")).unwrap();
    let b_file = SigningKey::load_or_generate(&dir.path().join("b.key")).unwrap();
    assert_eq!(a.public_key_base64(), global.public_key_base64());
    assert_eq!(b.public_key_base64(), b_file.public_key_base64());
    assert_eq!(
        ring.for_server(&name("other.example")).key_id(),
        global.key_id()
    );
}
