//! The config the master sends an agent right after `EC1` (the agent
//! says `EC1` itself, from memory, so the config reaches the agent and
//! never the first stage): `"<len>\n"` and a MessagePack map, the same map
//! a SPAWN carries ([`ChildConfig::to_msgpack_map`]). Bounded: a length
//! line past 20 bytes or a map past [`MAX_CONFIG`] is refused.

use econtext_bootstrap::ChildConfig;
use econtext_wire::Value;

/// Largest config accepted (the module path is its only long field).
pub const MAX_CONFIG: usize = 1 << 20;

/// The bytes the master writes after `EC1`.
pub fn encode(config: &ChildConfig) -> Vec<u8> {
    let map = Value::Map(
        config
            .to_msgpack_map()
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    );
    let mut body = Vec::new();
    rmpv::encode::write_value(&mut body, &map).expect("in-memory write");
    let mut out = format!("{}\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Parses the length line (without its newline).
pub fn parse_len(line: &[u8]) -> Result<usize, String> {
    let n: usize = std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or("config length line is not a number")?;
    if n > MAX_CONFIG {
        return Err(format!("config of {n} bytes is over {MAX_CONFIG}"));
    }
    Ok(n)
}

/// Decodes the map that follows the length line.
pub fn decode(body: &[u8]) -> Result<ChildConfig, String> {
    econtext_wire::payload::check_structure(body).map_err(|e| e.to_string())?;
    let v = rmpv::decode::read_value(&mut &body[..]).map_err(|e| e.to_string())?;
    let Value::Map(entries) = v else {
        return Err("config is not a map".into());
    };
    let map = entries
        .into_iter()
        .map(|(k, v)| match k {
            Value::String(s) => s
                .into_str()
                .map(|k| (k, v))
                .ok_or_else(|| "config key is not UTF-8".to_string()),
            _ => Err("config key is not text".into()),
        })
        .collect::<Result<_, _>>()?;
    ChildConfig::from_msgpack_map(&map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_lies_are_refused() {
        let c = ChildConfig {
            context_id: 4,
            parent_id: 0,
            name: "ssh.4".into(),
            key: vec![9; 32],
            log_level: 20,
            max_message_size: 1 << 20,
            ancestors: vec![0],
            module_path: String::new(),
            import_timeout_ms: 30_000,
            spin_us: 50,
        };
        let bytes = encode(&c);
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let n = parse_len(&bytes[..nl]).unwrap();
        assert_eq!(decode(&bytes[nl + 1..nl + 1 + n]).unwrap(), c);
        assert!(parse_len(b"99999999999").is_err());
        assert!(parse_len(b"x").is_err());
        assert!(decode(b"\xc0").is_err());
        assert!(decode(&bytes[nl + 1..nl + 5]).is_err());
    }
}
