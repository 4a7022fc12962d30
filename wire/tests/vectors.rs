//! Shared test vectors in `wire/vectors/`: frames encoded by this crate that
//! the Python core decodes in its own tests (see `wire/vectors/README.md`
//! for the format).
//!
//! `ECONTEXT_REGEN_VECTORS=1 cargo test -p econtext-wire --test vectors`
//! rewrites every file from the specs below. Without it, the test checks
//! the committed files: each one decodes to what `vectors.json` says, and
//! re-encoding the JSON description reproduces it byte for byte.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use econtext_wire::ext::{CallError, ContextRef, Dead, SenderRef};
use econtext_wire::messages::{
    AddRoute, CallFunction, CallFunctionRequest, DelRoute, ForwardLog, ModuleReply, ModuleSource,
    NoArgs, NoKwargs,
};
use econtext_wire::payload::{self, decode_value, Value};
use econtext_wire::{
    handles, Direction, Frame, FrameCodec, Header, WireError, BATCH_FLAG, BULK_FLAG,
    DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN, MAC_LEN, TRAILER_FLAG,
};
use serde_json::{json, Value as Json};
use tokio_util::codec::{Decoder, Encoder};

/// The key every vector is sealed with (its bytes, not its hex).
const KEY: &[u8] = b"econtext test vector key, not a secret";
const FORMAT: u64 = 5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

// ---------------------------------------------------------------------------
// Values <-> the tagged JSON form.

fn ext_to_json(code: i8, v: &Value) -> Json {
    let mut raw = Vec::new();
    rmpv::encode::write_value(&mut raw, v).unwrap();
    match code {
        econtext_wire::ext::EXT_DEAD => {
            let d: Dead = payload::decode(&raw).unwrap();
            json!({"$ext": "Dead", "reason": d.reason})
        }
        econtext_wire::ext::EXT_CALL_ERROR => {
            let e: CallError = payload::decode(&raw).unwrap();
            json!({"$ext": "CallError", "type": e.type_name, "message": e.message,
                   "traceback": e.traceback})
        }
        econtext_wire::ext::EXT_CONTEXT => {
            let c: ContextRef = payload::decode(&raw).unwrap();
            json!({"$ext": "Context", "id": c.id, "name": c.name})
        }
        econtext_wire::ext::EXT_SENDER => {
            let s: SenderRef = payload::decode(&raw).unwrap();
            json!({"$ext": "Sender", "context": s.context, "handle": s.handle})
        }
        other => panic!("vector uses unknown ext code {other}"),
    }
}

/// The JSON description of a decoded value. Objects are always tags: maps
/// are `{"$map": [[k, v], ...]}` so that order and key types survive.
fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                json!(u)
            } else {
                json!(i.as_i64().unwrap())
            }
        }
        Value::F64(f) => json!({"$float": f}),
        Value::F32(f) => json!({"$float32": f}),
        Value::String(s) => Json::String(s.as_str().expect("vectors hold valid UTF-8").into()),
        Value::Binary(b) => json!({"$bin": hex::encode(b)}),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => json!({"$map": pairs
            .iter()
            .map(|(k, v)| json!([to_json(k), to_json(v)]))
            .collect::<Vec<_>>()}),
        Value::Ext(code, _) => ext_to_json(*code, v),
    }
}

fn typed_to_value<T: serde::Serialize>(t: &T) -> Value {
    let bytes = payload::encode(t).unwrap();
    rmpv::decode::read_value(&mut &bytes[..]).unwrap()
}

fn from_json(j: &Json) -> Value {
    let str_field = |k: &str| {
        j[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {j}"))
            .to_string()
    };
    let int_field = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} in {j}"));
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => panic!("untagged float {n}: use {{\"$float\": ...}}"),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        Json::Object(o) => {
            if let Some(f) = o.get("$float") {
                Value::F64(f.as_f64().unwrap())
            } else if let Some(f) = o.get("$float32") {
                Value::F32(f.as_f64().unwrap() as f32)
            } else if let Some(h) = o.get("$bin") {
                Value::Binary(hex::decode(h.as_str().unwrap()).unwrap())
            } else if let Some(pairs) = o.get("$map") {
                Value::Map(
                    pairs
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (from_json(&p[0]), from_json(&p[1])))
                        .collect(),
                )
            } else {
                match o.get("$ext").and_then(Json::as_str) {
                    Some("Dead") => typed_to_value(&Dead::new(str_field("reason"))),
                    Some("CallError") => typed_to_value(&CallError {
                        type_name: str_field("type"),
                        message: str_field("message"),
                        traceback: str_field("traceback"),
                    }),
                    Some("Context") => typed_to_value(&ContextRef {
                        id: int_field("id") as u16,
                        name: str_field("name"),
                    }),
                    Some("Sender") => typed_to_value(&SenderRef {
                        context: int_field("context") as u16,
                        handle: int_field("handle") as u32,
                    }),
                    _ => panic!("unknown tag object {j}"),
                }
            }
        }
    }
}

fn value_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

// ---------------------------------------------------------------------------
// The vectors.

#[derive(Clone)]
struct FrameSpec {
    header: Header,
    data: Bytes,
    message: Option<&'static str>,
    /// Sealed with a trailing MAC (the `TRAILER` length bit).
    trailer: bool,
    /// Gathered into batch number k of its file with the frames next to
    /// it that have the same k (see `docs/PROTOCOL.md`, "Batch frames").
    batch: Option<u64>,
    /// A batch frame sealed around exactly these bytes (which may break
    /// the batch rules): `header` and `data` are unused.
    raw_batch: Option<Bytes>,
    /// A bulk frame (the `BULK` length bit): `data` is its covered part
    /// (one MessagePack value), these the bytes after it, which no MAC
    /// covers.
    bulk: Option<Bytes>,
}

/// What `encode_frames` seals: header, data, trailer, batch, raw batch,
/// a bulk frame's bytes.
type Sealed = (
    Header,
    Bytes,
    bool,
    Option<u64>,
    Option<Bytes>,
    Option<Bytes>,
);

impl FrameSpec {
    fn sealed(&self) -> Sealed {
        (
            self.header,
            self.data.clone(),
            self.trailer,
            self.batch,
            self.raw_batch.clone(),
            self.bulk.clone(),
        )
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Xor { offset: usize, mask: u8 },
    SetBe32 { offset: usize, value: u32 },
    Truncate { length: usize },
    Delete { start: usize, end: usize },
}

impl Mutation {
    fn apply(&self, wire: &mut Vec<u8>) {
        match *self {
            Mutation::Xor { offset, mask } => wire[offset] ^= mask,
            Mutation::SetBe32 { offset, value } => {
                wire[offset..offset + 4].copy_from_slice(&value.to_be_bytes())
            }
            Mutation::Truncate { length } => wire.truncate(length),
            Mutation::Delete { start, end } => {
                wire.drain(start..end);
            }
        }
    }

    fn to_json(&self) -> Json {
        match *self {
            Mutation::Xor { offset, mask } => json!({"op": "xor", "offset": offset, "mask": mask}),
            Mutation::SetBe32 { offset, value } => {
                json!({"op": "set_be32", "offset": offset, "value": value})
            }
            Mutation::Truncate { length } => json!({"op": "truncate", "length": length}),
            Mutation::Delete { start, end } => json!({"op": "delete", "start": start, "end": end}),
        }
    }

    fn from_json(j: &Json) -> Mutation {
        let n = |k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k} in {j}")) as usize;
        match j["op"].as_str().unwrap() {
            "xor" => Mutation::Xor {
                offset: n("offset"),
                mask: n("mask") as u8,
            },
            "set_be32" => Mutation::SetBe32 {
                offset: n("offset"),
                value: n("value") as u32,
            },
            "truncate" => Mutation::Truncate {
                length: n("length"),
            },
            "delete" => Mutation::Delete {
                start: n("start"),
                end: n("end"),
            },
            op => panic!("unknown mutation {op}"),
        }
    }
}

struct VectorSpec {
    name: &'static str,
    description: &'static str,
    direction: Direction,
    frames: Vec<FrameSpec>,
    mutations: Vec<Mutation>,
    /// The error kind a receiver must end with, or None for a valid stream.
    error: Option<&'static str>,
    /// Frames a receiver yields before the error (all of them when valid).
    decoded: usize,
}

fn data(v: &Value) -> Bytes {
    Bytes::from(value_bytes(v))
}

fn typed<T: serde::Serialize + ?Sized>(t: &T) -> Bytes {
    payload::encode(t).unwrap()
}

fn f(header: Header, data: Bytes) -> FrameSpec {
    FrameSpec {
        header,
        data,
        message: None,
        trailer: false,
        batch: None,
        raw_batch: None,
        bulk: None,
    }
}

/// A bulk frame: `covered`, then `bytes` that no MAC covers.
fn bk(header: Header, covered: Bytes, bytes: Vec<u8>) -> FrameSpec {
    FrameSpec {
        bulk: Some(Bytes::from(bytes)),
        ..f(header, covered)
    }
}

/// `spec` gathered into batch `k` of its file.
fn b(k: u64, spec: FrameSpec) -> FrameSpec {
    FrameSpec {
        batch: Some(k),
        ..spec
    }
}

/// A batch frame sealed around `inner` as it is.
fn raw_batch(inner: Vec<u8>) -> FrameSpec {
    FrameSpec {
        raw_batch: Some(Bytes::from(inner)),
        ..f(Header::default(), Bytes::new())
    }
}

/// A batch entry: fields with the raw length field `length`, then `data`.
fn entry(h: Header, length: u32, data: &[u8]) -> Vec<u8> {
    let mut v = h.fields(length).to_vec();
    v.extend_from_slice(data);
    v
}

/// A frame sealed with its MAC after the data.
fn t(header: Header, data: Bytes) -> FrameSpec {
    FrameSpec {
        trailer: true,
        ..f(header, data)
    }
}

fn msg(message: &'static str, header: Header, data: Bytes) -> FrameSpec {
    FrameSpec {
        header,
        data,
        message: Some(message),
        ..f(header, Bytes::new())
    }
}

/// The header used for plain value frames: a reply from context 0 to a
/// dynamic handle in context 1.
fn h() -> Header {
    Header::new(1, 0, handles::FIRST_DYNAMIC, 0)
}

fn values(vals: Vec<Value>) -> Vec<FrameSpec> {
    vals.iter().map(|v| f(h(), data(v))).collect()
}

fn valid(
    name: &'static str,
    description: &'static str,
    direction: Direction,
    frames: Vec<FrameSpec>,
) -> VectorSpec {
    let decoded = frames.len();
    VectorSpec {
        name,
        description,
        direction,
        frames,
        mutations: vec![],
        error: None,
        decoded,
    }
}

fn corrupt(
    name: &'static str,
    description: &'static str,
    frames: Vec<FrameSpec>,
    mutations: Vec<Mutation>,
    error: &'static str,
    decoded: usize,
) -> VectorSpec {
    VectorSpec {
        name,
        description,
        direction: Direction::Down,
        frames,
        mutations,
        error: Some(error),
        decoded,
    }
}

fn ascii(n: usize) -> String {
    (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

fn zlib(text: &str) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(text.as_bytes()).unwrap();
    z.finish().unwrap()
}

fn nest(depth: usize) -> Value {
    let mut v = Value::from("bottom");
    for i in 0..depth {
        v = if i % 2 == 0 {
            Value::Array(vec![v])
        } else {
            Value::Map(vec![(Value::from("k"), v)])
        };
    }
    v
}

fn specs() -> Vec<VectorSpec> {
    use Direction::{Down, Up};
    let int = |i: i128| {
        if i >= 0 {
            Value::from(i as u64)
        } else {
            Value::from(i as i64)
        }
    };
    let mut out = vec![
        valid(
            "empty_stream",
            "no frames at all: a clean EOF",
            Down,
            vec![],
        ),
        valid(
            "headers",
            "header fields at their extremes and in a recognisable byte order; data nil",
            Down,
            vec![
                f(Header::new(0, 0, 0, 0), data(&Value::Nil)),
                f(
                    Header::new(u16::MAX, u16::MAX, u32::MAX, u32::MAX),
                    data(&Value::Nil),
                ),
                f(
                    Header::new(0x0102, 0x0304, 0x0506_0708, 0x090a_0b0c),
                    data(&Value::Nil),
                ),
            ],
        ),
        valid(
            "nil_and_bools",
            "nil, true, false",
            Down,
            values(vec![
                Value::Nil,
                Value::Boolean(true),
                Value::Boolean(false),
            ]),
        ),
        valid(
            "ints",
            "integers at both ends of every MessagePack width: positive fixint, \
             uint8, uint16, uint32, uint64, negative fixint, int8, int16, int32, int64",
            Down,
            values(
                [
                    0,
                    1,
                    127,
                    128,
                    255,
                    256,
                    65535,
                    65536,
                    u32::MAX as i128,
                    u32::MAX as i128 + 1,
                    u64::MAX as i128,
                    -1,
                    -32,
                    -33,
                    -128,
                    -129,
                    -32768,
                    -32769,
                    i32::MIN as i128,
                    i32::MIN as i128 - 1,
                    i64::MIN as i128,
                ]
                .into_iter()
                .map(int)
                .collect(),
            ),
        ),
        valid(
            "floats",
            "float64 values (Python floats always travel as float64)",
            Down,
            values(
                [
                    0.0,
                    -0.0,
                    1.5,
                    -2.25,
                    0.1,
                    1e300,
                    5e-324,
                    f64::MAX,
                    f64::MIN,
                ]
                .into_iter()
                .map(Value::F64)
                .collect(),
            ),
        ),
        valid(
            "strs",
            "str: empty, unicode, 16 two-byte characters (32 bytes: str8 by bytes, not \
             by characters), and ASCII at the fixstr/str8/str16/str32 boundaries \
             (31, 32, 255, 256, 65535, 65536 bytes)",
            Down,
            values(
                [
                    String::new(),
                    "héllo wörld ☃ 𝄞 日本".to_string(),
                    "é".repeat(16),
                    ascii(31),
                    ascii(32),
                    ascii(255),
                    ascii(256),
                    ascii(65535),
                    ascii(65536),
                ]
                .into_iter()
                .map(Value::from)
                .collect(),
            ),
        ),
        valid(
            "bins",
            "bin at the bin8/bin16/bin32 boundaries (0, 1, 255, 256, 65535, 65536 bytes)",
            Down,
            values(
                [0usize, 1, 255, 256, 65535, 65536]
                    .into_iter()
                    .map(|n| Value::Binary((0..n).map(|i| (i * 7 + 3) as u8).collect()))
                    .collect(),
            ),
        ),
        valid(
            "arrays",
            "arrays at the fixarray/array16/array32 boundaries (0, 1, 15, 16, 65535, \
             65536 elements)",
            Down,
            values(
                [0usize, 1, 15, 16, 65535, 65536]
                    .into_iter()
                    .map(|n| Value::Array((0..n).map(|i| Value::from(i % 100)).collect()))
                    .collect(),
            ),
        ),
        valid(
            "maps",
            "maps with str keys at the fixmap/map16/map32 boundaries (0, 1, 15, 16, \
             65536 entries), keys in insertion order",
            Down,
            values(
                [0usize, 1, 15, 16, 65536]
                    .into_iter()
                    .map(|n| {
                        Value::Map(
                            (0..n)
                                .map(|i| (Value::from(format!("k{i}")), Value::from(i % 100)))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        ),
        valid(
            "nested",
            "containers inside containers: a call-result-like map, a list of mixed \
             values, and arrays/maps nested to exactly 128 levels (the receive limit)",
            Down,
            values(vec![
                Value::Map(vec![
                    (
                        Value::from("rows"),
                        Value::Array(vec![
                            Value::Map(vec![
                                (Value::from("id"), Value::from(1)),
                                (Value::from("ok"), Value::Boolean(true)),
                            ]),
                            Value::Map(vec![
                                (Value::from("id"), Value::from(-2)),
                                (Value::from("blob"), Value::Binary(vec![0, 255, 10])),
                            ]),
                        ]),
                    ),
                    (Value::from("empty"), Value::Map(vec![])),
                    (Value::from("none"), Value::Nil),
                ]),
                Value::Array(vec![
                    Value::Nil,
                    Value::F64(2.5),
                    Value::from("s"),
                    Value::Array(vec![Value::Array(vec![])]),
                    typed_to_value(&SenderRef {
                        context: 3,
                        handle: 1002,
                    }),
                ]),
                nest(payload::MAX_DEPTH),
            ]),
        ),
        valid(
            "exts",
            "all four ext types; Dead reasons sized to hit fixext1/2/4/8/16, ext8, \
             ext16 and ext32; ext values inside an array",
            Down,
            values(vec![
                typed_to_value(&Dead::new("")),
                typed_to_value(&Dead::new("x")),
                typed_to_value(&Dead::new("abc")),
                typed_to_value(&Dead::new("closed!")),
                typed_to_value(&Dead::new("no route to 777")),
                typed_to_value(&Dead::new("no route to 7")),
                typed_to_value(&Dead::new(ascii(300))),
                typed_to_value(&Dead::new(ascii(65536))),
                typed_to_value(&CallError {
                    type_name: "builtins.ZeroDivisionError".into(),
                    message: "division by zero".into(),
                    traceback: "Traceback (most recent call last):\n  File \"<stdin>\", \
                                line 1, in <module>\nZeroDivisionError: division by zero\n"
                        .into(),
                }),
                typed_to_value(&ContextRef {
                    id: 7,
                    name: "local.7".into(),
                }),
                typed_to_value(&SenderRef {
                    context: 2,
                    handle: 1000,
                }),
                Value::Array(vec![
                    typed_to_value(&ContextRef {
                        id: 65535,
                        name: "ssh.host.example".into(),
                    }),
                    typed_to_value(&SenderRef {
                        context: 0,
                        handle: u32::MAX,
                    }),
                ]),
            ]),
        ),
    ];

    // Messages, in the direction they really travel.
    let call = typed(&CallFunction {
        module: "econtext.examples",
        class: None,
        function: "add",
        args: (1, 2.5, "three", serde_bytes::Bytes::new(b"\x00\x04")),
        kwargs: [("flag", true)].into_iter().collect::<BTreeMap<_, _>>(),
    });
    let method_call = typed(&CallFunction {
        module: "pkg.mod",
        class: Some("Greeter"),
        function: "hello",
        args: NoArgs::default(),
        kwargs: NoKwargs::new(),
    });
    let modules: ModuleReply = Some(vec![
        ModuleSource {
            fullname: "pkg".into(),
            filename: "master:pkg/__init__.py".into(),
            is_package: true,
            source: zlib("from pkg import mod\n"),
            children: vec!["mod".into(), "util".into()],
            requires_python: String::new(),
            master_python: String::new(),
        },
        ModuleSource {
            fullname: "pkg.mod".into(),
            filename: "master:pkg/mod.py".into(),
            is_package: false,
            source: zlib("class Greeter:\n    def hello(self):\n        return 'hi'\n"),
            children: vec![],
            requires_python: String::new(),
            master_python: String::new(),
        },
    ]);
    out.push(valid(
        "messages_down",
        "parent to child: CALL_FUNCTION (function and method), ADD_ROUTE, DEL_ROUTE, \
         a GET_MODULE reply with two module records, a GET_MODULE reply for an unknown \
         module (nil), SHUTDOWN",
        Down,
        vec![
            msg(
                "CALL_FUNCTION",
                Header::new(1, 0, handles::CALL_FUNCTION, 1000),
                call,
            ),
            msg(
                "CALL_FUNCTION",
                Header::new(1, 0, handles::CALL_FUNCTION, 1001),
                method_call,
            ),
            msg(
                "ADD_ROUTE",
                Header::new(1, 0, handles::ADD_ROUTE, 0),
                typed(&AddRoute { target: 5, via: 2 }),
            ),
            msg(
                "DEL_ROUTE",
                Header::new(1, 0, handles::DEL_ROUTE, 0),
                typed::<DelRoute>(&5),
            ),
            msg(
                "GET_MODULE_REPLY",
                Header::new(1, 0, 1002, 0),
                typed(&modules),
            ),
            msg(
                "GET_MODULE_REPLY",
                Header::new(1, 0, 1003, 0),
                typed::<ModuleReply>(&None),
            ),
            msg(
                "SHUTDOWN",
                Header::new(1, 0, handles::SHUTDOWN, 0),
                typed(&()),
            ),
        ],
    ));
    out.push(valid(
        "messages_up",
        "child to parent: FORWARD_LOG (a stdout line and a logger record), GET_MODULE \
         request, and replies to calls: a value, a CallError, a Dead",
        Up,
        vec![
            msg(
                "FORWARD_LOG",
                Header::new(0, 1, handles::FORWARD_LOG, 0),
                typed(&ForwardLog {
                    logger: "stdout".into(),
                    level: 20,
                    message: "hello from the child".into(),
                }),
            ),
            msg(
                "FORWARD_LOG",
                Header::new(0, 1, handles::FORWARD_LOG, 0),
                typed(&ForwardLog {
                    logger: "econtext.examples".into(),
                    level: 30,
                    message: "disk 91% full".into(),
                }),
            ),
            msg(
                "GET_MODULE",
                Header::new(0, 1, handles::GET_MODULE, 1002),
                typed("pkg.mod"),
            ),
            f(Header::new(0, 1, 1000, 0), typed(&3.5f64)),
            f(
                Header::new(0, 1, 1001, 0),
                typed(&CallError {
                    type_name: "builtins.AttributeError".into(),
                    message: "no attribute 'hello'".into(),
                    traceback: "Traceback ...".into(),
                }),
            ),
            f(
                Header::new(0, 1, 1004, 0),
                typed(&Dead::new("context 1 shutting down")),
            ),
        ],
    ));

    // Corrupted streams. Offsets are into the encoded stream: a frame
    // starts with mac[0..20], dst[20..22], src[22..24], handle[24..28],
    // reply_to[28..32], length[32..36], then data.
    let ten = || f(h(), data(&Value::from("0123456789"[..9].to_string())));
    let small = |n: u64| f(Header::new(1, 0, 1000 + n as u32, 0), data(&Value::from(n)));
    let ten_len = HEADER_LEN + 10;
    let max = DEFAULT_MAX_MESSAGE_SIZE as u32;
    out.extend([
        corrupt(
            "bad_mac_flipped_mac_bit",
            "one bit of the MAC flipped",
            vec![ten()],
            vec![Mutation::Xor { offset: 0, mask: 1 }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_flipped_header_field",
            "the low bit of the handle field flipped (fields are covered by the MAC)",
            vec![ten()],
            vec![Mutation::Xor {
                offset: 27,
                mask: 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_flipped_data_bit",
            "one bit of the data flipped",
            vec![ten()],
            vec![Mutation::Xor {
                offset: HEADER_LEN + 3,
                mask: 0x20,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_dropped_frame",
            "three frames sealed in order, the second one deleted: the first decodes, \
             the third fails because it was sealed as frame 2 and the receiver expects frame 1",
            vec![small(1), small(2), small(3)],
            vec![Mutation::Delete {
                start: HEADER_LEN + 1,
                end: 2 * (HEADER_LEN + 1),
            }],
            "bad_mac",
            1,
        ),
        corrupt(
            "bad_mac_reordered_frames",
            "two frames sealed in order, sent second-first (the first frame's bytes \
             deleted from the front and not resent)",
            vec![small(1), small(2)],
            vec![Mutation::Delete {
                start: 0,
                end: HEADER_LEN + 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "oversized_by_one",
            "a header announcing max_message_size + 1 bytes and nothing after it: \
             refused from the header alone",
            vec![ten()],
            vec![
                Mutation::SetBe32 {
                    offset: 32,
                    value: max + 1,
                },
                Mutation::Truncate { length: HEADER_LEN },
            ],
            "oversized",
            0,
        ),
        corrupt(
            "oversized_4_gib_after_a_valid_frame",
            "a valid frame, then a header whose length field is 0xffffffff (the trailer \
             bit and 2 GiB - 1 bytes)",
            vec![small(1), ten()],
            vec![Mutation::SetBe32 {
                offset: HEADER_LEN + 1 + 32,
                value: u32::MAX,
            }],
            "oversized",
            1,
        ),
        corrupt(
            "truncated_in_header",
            "the stream ends 20 bytes into a header",
            vec![ten()],
            vec![Mutation::Truncate { length: 20 }],
            "truncated",
            0,
        ),
        corrupt(
            "truncated_in_data",
            "the stream ends 4 bytes into a frame's 10 bytes of data",
            vec![ten()],
            vec![Mutation::Truncate {
                length: HEADER_LEN + 4,
            }],
            "truncated",
            0,
        ),
        corrupt(
            "truncated_after_a_valid_frame",
            "a complete frame, then the stream ends one byte short of the second",
            vec![ten(), ten()],
            vec![Mutation::Truncate {
                length: 2 * ten_len - 1,
            }],
            "truncated",
            1,
        ),
    ]);

    // Trailing MACs: the same frames with the MAC after the data (the
    // length field's top bit set, the header's MAC bytes zero).
    let tten = || t(h(), data(&Value::from("0123456789"[..9].to_string())));
    let tsmall = |n: u64| t(Header::new(1, 0, 1000 + n as u32, 0), data(&Value::from(n)));
    let tten_len = ten_len + MAC_LEN;
    out.push(valid(
        "trailers",
        "frames with a trailing MAC, mixed with leading ones on one stream: nil, a str, \
         a leading int, a 70,000-byte bin, an empty bin",
        Down,
        vec![
            t(h(), data(&Value::Nil)),
            tten(),
            small(7),
            t(
                h(),
                data(&Value::Binary((0..70_000).map(|i| i as u8).collect())),
            ),
            t(h(), data(&Value::Binary(vec![]))),
        ],
    ));
    out.extend([
        corrupt(
            "bad_mac_forged_trailer",
            "a trailing frame whose trailing MAC has one bit flipped",
            vec![tten()],
            vec![Mutation::Xor {
                offset: tten_len - 1,
                mask: 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_trailer_data_bit",
            "a trailing frame with one bit of its data flipped",
            vec![tten()],
            vec![Mutation::Xor {
                offset: HEADER_LEN + 3,
                mask: 0x20,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_trailer_with_header_mac_bytes",
            "a trailing frame with a byte set in its header's MAC bytes (which must be \
             zero): refused from the header",
            vec![tten()],
            vec![Mutation::Xor { offset: 5, mask: 1 }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_trailer_bit_cleared",
            "a trailing frame with the trailer bit cleared: now a leading frame whose MAC \
             is zero",
            vec![tten(), tten()],
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x80,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_trailer_bit_set_on_a_leading_frame",
            "a leading frame given the trailer bit (its header MAC bytes are not zero)",
            vec![ten(), ten()],
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x80,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_reordered_trailers",
            "two trailing frames sealed in order, sent second-first",
            vec![tsmall(1), tsmall(2)],
            vec![Mutation::Delete {
                start: 0,
                end: HEADER_LEN + 1 + MAC_LEN,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "oversized_trailer",
            "a trailing frame's header announcing max_message_size + 1 bytes and nothing \
             after it: refused from the header alone",
            vec![tten()],
            vec![
                Mutation::SetBe32 {
                    offset: 32,
                    value: (max + 1) | TRAILER_FLAG,
                },
                Mutation::Truncate { length: HEADER_LEN },
            ],
            "oversized",
            0,
        ),
        corrupt(
            "truncated_in_trailer",
            "the stream ends one byte short of a trailing frame's MAC",
            vec![tten()],
            vec![Mutation::Truncate {
                length: tten_len - 1,
            }],
            "truncated",
            0,
        ),
    ]);

    // Batch frames: small frames under one MAC (the length field's bit 29
    // set, the batch's own routing fields zero, its data each inner
    // frame's 16 fields and data).
    let call = |n: u32| {
        msg(
            "CALL_FUNCTION",
            Header::new(1, 0, handles::CALL_FUNCTION, 1000 + n),
            typed(&CallFunction {
                module: "copy",
                class: None,
                function: "copy",
                args: vec![n],
                kwargs: NoKwargs::new(),
            }),
        )
    };
    out.push(valid(
        "batches",
        "parent to child: a batch of three calls, a lone frame, a batch of an ADD_ROUTE, \
         an empty bin and nil, a trailing frame, then a batch of two calls",
        Down,
        vec![
            b(0, call(1)),
            b(0, call(2)),
            b(0, call(3)),
            small(4),
            b(
                1,
                msg(
                    "ADD_ROUTE",
                    Header::new(1, 0, handles::ADD_ROUTE, 0),
                    typed(&AddRoute { target: 5, via: 2 }),
                ),
            ),
            b(1, f(h(), data(&Value::Binary(vec![])))),
            b(1, f(Header::new(1, 0, 1001, 0), data(&Value::Nil))),
            tten(),
            b(2, call(5)),
            b(2, call(6)),
        ],
    ));
    out.push(valid(
        "batches_up",
        "child to parent: one batch of replies (ints, None, a CallError) and a FORWARD_LOG",
        Up,
        vec![
            b(0, f(Header::new(0, 1, 1001, 0), data(&Value::from(1u64)))),
            b(0, f(Header::new(0, 1, 1002, 0), data(&Value::from(300u64)))),
            b(0, f(Header::new(0, 1, 1003, 0), data(&Value::Nil))),
            b(
                0,
                f(
                    Header::new(0, 1, 1004, 0),
                    typed(&CallError {
                        type_name: "builtins.ZeroDivisionError".into(),
                        message: "division by zero".into(),
                        traceback: String::new(),
                    }),
                ),
            ),
            b(
                0,
                msg(
                    "FORWARD_LOG",
                    Header::new(0, 1, handles::FORWARD_LOG, 0),
                    typed(&ForwardLog {
                        logger: "stdout".into(),
                        level: 20,
                        message: "hi".into(),
                    }),
                ),
            ),
        ],
    ));
    // Offsets in a stream that starts with a batch of call(1) and call(2):
    // the batch's header, then each entry's 16 fields and its data.
    let call_len = call(1).data.len();
    let second_entry = HEADER_LEN + 16 + call_len;
    let two_calls = || vec![b(0, call(1)), b(0, call(2))];
    let inner = |h: Header, data: &[u8]| entry(h, data.len() as u32, data);
    let ch = Header::new(1, 0, 1000, 0);
    let one_int = inner(ch, &[7]);
    let then = |bad: Vec<u8>| {
        let mut v = one_int.clone();
        v.extend(bad);
        v
    };
    out.extend([
        corrupt(
            "bad_mac_batch_data_bit",
            "a batch of two calls with one bit of the second call's data flipped: \
             neither call is delivered",
            two_calls(),
            vec![Mutation::Xor {
                offset: second_entry + 16 + 2,
                mask: 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_batch_inner_field_bit",
            "a batch of two calls with a bit of the second call's handle flipped",
            two_calls(),
            vec![Mutation::Xor {
                offset: second_entry + 7,
                mask: 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_batch_bit_cleared",
            "a batch with its batch bit cleared: now an ordinary frame to context 0",
            two_calls(),
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x20,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "batch_bit_set_on_a_frame",
            "an ordinary frame to context 1 given the batch bit: refused from its header \
             (a batch has no routing fields)",
            vec![ten()],
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x20,
            }],
            "bad_batch",
            0,
        ),
        corrupt(
            "batch_addressed",
            "a batch whose own dst is set: refused from its header",
            two_calls(),
            vec![Mutation::Xor {
                offset: 21,
                mask: 1,
            }],
            "bad_batch",
            0,
        ),
        corrupt(
            "batch_with_a_trailing_mac",
            "a batch given the trailer bit: refused from its header",
            two_calls(),
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x80,
            }],
            "bad_batch",
            0,
        ),
        corrupt(
            "truncated_in_batch",
            "the stream ends inside the second call of a batch",
            two_calls(),
            vec![Mutation::Truncate {
                length: second_entry + 5,
            }],
            "truncated",
            0,
        ),
        corrupt(
            "batch_empty",
            "a valid frame, then a batch with no frames (its MAC good)",
            vec![small(1), raw_batch(vec![])],
            vec![],
            "bad_batch",
            1,
        ),
        corrupt(
            "batch_inner_runs_past",
            "a valid frame and a valid batch of two calls, then a batch whose second inner \
             frame announces more data than the batch holds (MAC good): only the first \
             three frames are delivered",
            vec![
                small(1),
                b(0, call(1)),
                b(0, call(2)),
                raw_batch(then(entry(ch, 10, b"short"))),
            ],
            vec![],
            "bad_batch",
            3,
        ),
        corrupt(
            "batch_inner_fields_run_past",
            "a batch that ends nine bytes into its second inner frame's fields (MAC good)",
            vec![raw_batch(then(ch.fields(0)[..9].to_vec()))],
            vec![],
            "bad_batch",
            0,
        ),
        corrupt(
            "batch_nested",
            "a batch holding a batch (MAC good)",
            vec![raw_batch(then(entry(
                Header::default(),
                one_int.len() as u32 | BATCH_FLAG,
                &one_int,
            )))],
            vec![],
            "bad_batch",
            0,
        ),
        corrupt(
            "batch_inner_trailer",
            "a batch holding a frame with the trailer bit (MAC good)",
            vec![raw_batch(then(entry(
                ch,
                1 | TRAILER_FLAG,
                &[7; 1 + MAC_LEN],
            )))],
            vec![],
            "bad_batch",
            0,
        ),
        corrupt(
            "batch_inner_oversized",
            "a batch whose inner frame announces max_message_size + 1 bytes (MAC good): \
             refused as oversized",
            vec![raw_batch(then(entry(ch, max + 1, &[7; 4])))],
            vec![],
            "oversized",
            0,
        ),
        corrupt(
            "batch_inner_bulk",
            "a batch holding a frame with the bulk bit (MAC good): bulk frames \
             are never batched, refused as oversized whatever the limit",
            vec![raw_batch(then(entry(ch, 1 | BULK_FLAG, &[7; 1])))],
            vec![],
            "oversized",
            0,
        ),
    ]);
    // Bulk frames (file chunks): the MAC covers the fields and data up to
    // the end of the covered part; the bytes after it no MAC covers.
    let chunk = |index: u64, offset: u64, last: bool| {
        data(&Value::Array(vec![
            Value::from(1),
            Value::from(index),
            Value::from(offset),
            Value::Binary((0..32).map(|i| (i * 7) as u8).collect()),
            Value::from(last),
        ]))
    };
    let bh = || Header::new(1, 0, handles::FIRST_DYNAMIC + 1, 0);
    let bten = || bk(bh(), chunk(0, 0, true), b"0123456789".to_vec());
    let bten_len = HEADER_LEN + 4 + chunk(0, 0, true).len() + 10;
    out.push(valid(
        "bulk",
        "bulk frames mixed with a leading and a trailing frame on one stream: file chunks \
         of 10 bytes, of 70,000 bytes and of none (an empty file), and a covered nil with \
         no bytes",
        Down,
        vec![
            bten(),
            small(7),
            bk(
                bh(),
                chunk(3, 1 << 33, false),
                (0..70_000).map(|i| i as u8).collect(),
            ),
            t(h(), data(&Value::Nil)),
            bk(bh(), chunk(0, 0, true), vec![]),
            bk(bh(), data(&Value::Nil), vec![]),
        ],
    ));
    out.extend([
        corrupt(
            "bad_mac_bulk_covered_bit",
            "a bulk frame with one bit of its covered part flipped",
            vec![bten()],
            vec![Mutation::Xor {
                offset: HEADER_LEN + 4 + 2,
                mask: 1,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_bulk_bit_cleared",
            "a bulk frame with the bulk bit cleared: now an ordinary frame",
            vec![bten(), bten()],
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x40,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_bulk_bit_set_on_a_leading_frame",
            "an ordinary frame given the bulk bit",
            vec![ten(), ten()],
            vec![Mutation::Xor {
                offset: 32,
                mask: 0x40,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_bulk_with_the_trailer_bit",
            "a bulk frame given the trailer bit too, its header MAC bytes zeroed: the two \
             never go together",
            vec![bten()],
            vec![
                Mutation::Xor {
                    offset: 32,
                    mask: 0x80,
                },
                Mutation::SetBe32 {
                    offset: 0,
                    value: 0,
                },
                Mutation::SetBe32 {
                    offset: 4,
                    value: 0,
                },
                Mutation::SetBe32 {
                    offset: 8,
                    value: 0,
                },
                Mutation::SetBe32 {
                    offset: 12,
                    value: 0,
                },
                Mutation::SetBe32 {
                    offset: 16,
                    value: 0,
                },
            ],
            "bad_mac",
            0,
        ),
        corrupt(
            "bad_mac_bulk_prefix_past_the_data",
            "a bulk frame whose covered length claims more than its data holds",
            vec![bten()],
            vec![Mutation::SetBe32 {
                offset: HEADER_LEN,
                value: 1000,
            }],
            "bad_mac",
            0,
        ),
        corrupt(
            "oversized_bulk",
            "a bulk frame's header announcing max_message_size + 1 bytes and nothing after \
             it: refused from the header alone",
            vec![bten()],
            vec![
                Mutation::SetBe32 {
                    offset: 32,
                    value: (max + 1) | BULK_FLAG,
                },
                Mutation::Truncate { length: HEADER_LEN },
            ],
            "oversized",
            0,
        ),
        corrupt(
            "truncated_in_bulk_bytes",
            "the stream ends one byte short of a bulk frame's (uncovered) bytes",
            vec![bten()],
            vec![Mutation::Truncate {
                length: bten_len - 1,
            }],
            "truncated",
            0,
        ),
    ]);
    out
}

// ---------------------------------------------------------------------------
// Encoding, decoding, JSON.

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Down => "down",
        Direction::Up => "up",
    }
}

fn parse_dir(s: &str) -> Direction {
    match s {
        "down" => Direction::Down,
        "up" => Direction::Up,
        other => panic!("unknown direction {other}"),
    }
}

fn encode_frames(direction: Direction, frames: &[Sealed]) -> Vec<u8> {
    let mut tx = FrameCodec::new(KEY, direction, DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = BytesMut::new();
    let mut open = None;
    for (h, d, trailer, batch, raw, bulk) in frames {
        if open != *batch {
            tx.seal_gathered(&mut buf);
            open = *batch;
        }
        if let Some(inner) = raw {
            let header = tx.seal_batch(inner).unwrap();
            buf.extend_from_slice(&header);
            buf.extend_from_slice(inner);
        } else if batch.is_some() {
            tx.gather(&mut buf, h, d).unwrap();
        } else if let Some(bytes) = bulk {
            tx.encode(
                Frame::bulk(*h, econtext_wire::bulk::join(d, bytes)),
                &mut buf,
            )
            .unwrap();
        } else {
            tx.set_trailer_from(if *trailer { 0 } else { usize::MAX });
            tx.encode(Frame::new(*h, d.clone()), &mut buf).unwrap();
        }
    }
    tx.seal_gathered(&mut buf);
    buf.to_vec()
}

/// The JSON of a decoded frame's data: its value and, for a bulk frame,
/// the value of its covered part and its bytes in hex.
fn data_json(frame: &Frame, o: &mut serde_json::Map<String, Json>) -> Result<(), String> {
    let (value, bytes) = match frame.bulk {
        true => {
            let (covered, bytes) =
                econtext_wire::bulk::split(&frame.data).ok_or("no covered part")?;
            (covered, Some(bytes))
        }
        false => (&frame.data[..], None),
    };
    let v = decode_value(value).map_err(|e| e.to_string())?;
    o.insert("value".into(), to_json(&v));
    if let Some(b) = bytes {
        o.insert("bytes".into(), json!(hex::encode(b)));
    }
    Ok(())
}

/// Decodes a whole file the way a receiver does at EOF: frames until the
/// bytes run out, then decode_eof.
fn decode_stream(direction: Direction, wire: &[u8]) -> (Vec<Frame>, Option<WireError>) {
    // The receiver's codec sends the other way, so its receive sequence is
    // the vector's direction.
    let mut rx = FrameCodec::new(KEY, direction.reverse(), DEFAULT_MAX_MESSAGE_SIZE);
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    loop {
        match rx.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn error_json(e: &WireError) -> Json {
    match e {
        WireError::BadMac {
            dst,
            src,
            handle,
            length,
        } => json!({"kind": "bad_mac", "dst": dst, "src": src, "handle": handle,
                    "length": length}),
        WireError::Oversized { length, max } => {
            json!({"kind": "oversized", "length": length, "max": max})
        }
        WireError::Truncated { have, need } => {
            json!({"kind": "truncated", "have": have, "need": need})
        }
        WireError::BadBatch { fault } => json!({"kind": "bad_batch", "fault": fault.name()}),
        other => panic!("not a stream error: {other:?}"),
    }
}

fn header_json(h: &Header, length: usize) -> serde_json::Map<String, Json> {
    let j = json!({"dst": h.dst, "src": h.src, "handle": h.handle, "reply_to": h.reply_to,
                   "length": length});
    j.as_object().unwrap().clone()
}

/// Checks a decoded message frame against its handle's typed decoder.
fn check_message(message: &str, data: &[u8]) {
    let ok = match message {
        "CALL_FUNCTION" => payload::decode::<CallFunctionRequest>(data).is_ok(),
        "FORWARD_LOG" => payload::decode::<ForwardLog>(data).is_ok(),
        "ADD_ROUTE" => payload::decode::<AddRoute>(data).is_ok(),
        "DEL_ROUTE" => payload::decode::<DelRoute>(data).is_ok(),
        "GET_MODULE" => payload::decode::<String>(data).is_ok(),
        "GET_MODULE_REPLY" => payload::decode::<ModuleReply>(data).is_ok(),
        "SHUTDOWN" => payload::decode::<()>(data).is_ok(),
        other => panic!("unknown message {other}"),
    };
    assert!(ok, "{message} frame does not decode as {message}");
}

fn regenerate() {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut vectors = Vec::new();
    let mut compact_frames = Vec::new();
    for spec in specs() {
        let pairs: Vec<Sealed> = spec.frames.iter().map(FrameSpec::sealed).collect();
        let mut wire = encode_frames(spec.direction, &pairs);
        for m in &spec.mutations {
            m.apply(&mut wire);
        }
        let (got, err) = decode_stream(spec.direction, &wire);
        assert_eq!(got.len(), spec.decoded, "{}: frames decoded", spec.name);
        let err_json = err.as_ref().map(error_json);
        assert_eq!(
            err_json.as_ref().map(|e| e["kind"].as_str().unwrap()),
            spec.error,
            "{}: error {err:?}",
            spec.name
        );
        // Each frame is written compactly on one line (see below); here it
        // is a placeholder string.
        let frames: Vec<Json> = spec
            .frames
            .iter()
            .map(|f| {
                let mut o = serde_json::Map::new();
                if let Some(raw) = &f.raw_batch {
                    o.insert("raw_batch".into(), json!(hex::encode(raw)));
                } else {
                    let whole = f
                        .bulk
                        .as_ref()
                        .map_or(f.data.len(), |b| 4 + f.data.len() + b.len());
                    o = header_json(&f.header, whole);
                    o.insert("trailer".into(), json!(f.trailer));
                    o.insert("batch".into(), json!(f.batch));
                    o.insert("bulk".into(), json!(f.bulk.is_some()));
                    o.insert("message".into(), json!(f.message));
                    o.insert("value".into(), to_json(&decode_value(&f.data).unwrap()));
                    if let Some(b) = &f.bulk {
                        o.insert("bytes".into(), json!(hex::encode(b)));
                    }
                }
                let compact = serde_json::to_string(&Json::Object(o)).unwrap();
                let tag = format!("@@frame{}@@", compact_frames.len());
                compact_frames.push((tag.clone(), compact));
                Json::String(tag)
            })
            .collect();
        let file = format!("{}.bin", spec.name);
        std::fs::write(dir.join(&file), &wire).unwrap();
        vectors.push(json!({
            "name": spec.name,
            "file": file,
            "description": spec.description,
            "direction": dir_name(spec.direction),
            "size": wire.len(),
            "frames": frames,
            "mutations": spec.mutations.iter().map(Mutation::to_json).collect::<Vec<_>>(),
            "valid": spec.error.is_none(),
            "decoded": spec.decoded,
            "error": err_json,
        }));
    }
    let doc = json!({
        "format": FORMAT,
        "about": "econtext-wire test vectors; see README.md. Every file is its own stream: \
                  decode it with a fresh receive sequence (starting at 0) for its direction.",
        "key_hex": hex::encode(KEY),
        "direction_bytes": {"down": 0, "up": 1},
        "mac": "frame n (from 0) of a file: HMAC-SHA1(key, direction_byte || n:u64be || header[20:36] || data), \
                in header[0:20], or after the data when the length field's top bit (trailer) is set; \
                a batch (the length field's bit 29) is one frame n whose data is its inner frames' \
                header[20:36] and data back to back; for a bulk frame (bit 30) the MAC covers data \
                only up to the end of its covered part (data = covered_len:u32be covered bytes)",
        "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
        "vectors": vectors,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    for (tag, compact) in compact_frames {
        text = text.replacen(&format!("\"{tag}\""), &compact, 1);
    }
    text.push('\n');
    std::fs::write(dir.join("vectors.json"), text).unwrap();
}

#[test]
fn vectors_match_their_description() {
    if std::env::var_os("ECONTEXT_REGEN_VECTORS").is_some_and(|v| v == "1") {
        regenerate();
    }
    let dir = dir();
    let text = std::fs::read(dir.join("vectors.json")).expect(
        "wire/vectors/vectors.json missing: run with ECONTEXT_REGEN_VECTORS=1 to create it",
    );
    // The deepest vector nests 128 MessagePack containers, which is more
    // JSON nesting than serde_json allows by default.
    let mut de = serde_json::Deserializer::from_slice(&text);
    de.disable_recursion_limit();
    let doc: Json = serde::Deserialize::deserialize(&mut de).unwrap();
    de.end().unwrap();
    assert_eq!(doc["format"], json!(FORMAT));
    assert_eq!(doc["key_hex"], json!(hex::encode(KEY)));
    assert_eq!(doc["max_message_size"], json!(DEFAULT_MAX_MESSAGE_SIZE));

    let vectors = doc["vectors"].as_array().unwrap();
    let mut listed = std::collections::BTreeSet::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let file = v["file"].as_str().unwrap();
        listed.insert(file.to_string());
        let wire = std::fs::read(dir.join(file)).unwrap();
        assert_eq!(v["size"], json!(wire.len()), "{name}: size");
        let direction = parse_dir(v["direction"].as_str().unwrap());
        let frames = v["frames"].as_array().unwrap();
        let decoded = v["decoded"].as_u64().unwrap() as usize;

        // JSON -> bytes: the description re-encodes to the file exactly.
        let pairs: Vec<Sealed> = frames
            .iter()
            .map(|fj| {
                if let Some(raw) = fj["raw_batch"].as_str() {
                    let inner = Bytes::from(hex::decode(raw).unwrap());
                    return (
                        Header::default(),
                        Bytes::new(),
                        false,
                        None,
                        Some(inner),
                        None,
                    );
                }
                let n = |k: &str| fj[k].as_u64().unwrap();
                let h = Header::new(
                    n("dst") as u16,
                    n("src") as u16,
                    n("handle") as u32,
                    n("reply_to") as u32,
                );
                let d = Bytes::from(value_bytes(&from_json(&fj["value"])));
                let bulk = fj["bulk"]
                    .as_bool()
                    .unwrap()
                    .then(|| Bytes::from(hex::decode(fj["bytes"].as_str().unwrap()).unwrap()));
                let whole = bulk.as_ref().map_or(d.len(), |b| 4 + d.len() + b.len());
                assert_eq!(n("length") as usize, whole, "{name}: length");
                let batch = fj["batch"].as_u64();
                (h, d, fj["trailer"].as_bool().unwrap(), batch, None, bulk)
            })
            .collect();
        let mut again = encode_frames(direction, &pairs);
        for m in v["mutations"].as_array().unwrap() {
            Mutation::from_json(m).apply(&mut again);
        }
        assert!(again == wire, "{name}: re-encoding differs from {file}");

        // bytes -> JSON: decoding the file gives the described frames.
        let (got, err) = decode_stream(direction, &wire);
        assert_eq!(got.len(), decoded, "{name}: frames decoded");
        assert_eq!(
            err.as_ref().map(error_json),
            v["error"].as_object().map(|o| Json::Object(o.clone())),
            "{name}: error"
        );
        assert_eq!(v["valid"], json!(err.is_none()), "{name}: valid");
        for (i, (frame, fj)) in got.iter().zip(frames).enumerate() {
            let mut o = header_json(&frame.header, frame.data.len());
            // How the frame was sealed is checked by re-encoding, above.
            o.insert("trailer".into(), fj["trailer"].clone());
            o.insert("batch".into(), fj["batch"].clone());
            o.insert("bulk".into(), json!(frame.bulk));
            o.insert("message".into(), fj["message"].clone());
            data_json(frame, &mut o).unwrap_or_else(|e| panic!("{name} frame {i}: {e}"));
            assert!(
                Json::Object(o) == *fj,
                "{name} frame {i} differs from its description"
            );
            if let Some(m) = fj["message"].as_str() {
                check_message(m, &frame.data);
            }
        }
    }
    assert_every_marker_covered(vectors);
    let on_disk: std::collections::BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    assert_eq!(on_disk, listed, ".bin files on disk vs vectors.json");
}

/// The valid vectors between them start a frame's data with every
/// MessagePack format there is (bar float32, which Python never sends).
fn assert_every_marker_covered(vectors: &[Json]) {
    let mut seen = std::collections::BTreeSet::new();
    for v in vectors.iter().filter(|v| v["valid"] == json!(true)) {
        for fj in v["frames"].as_array().unwrap() {
            let data = value_bytes(&from_json(&fj["value"]));
            let name = format!("{:?}", rmp::Marker::from_u8(data[0]));
            // FixPos(5) -> FixPos: the family, not the payload.
            seen.insert(name.split('(').next().unwrap().to_string());
        }
    }
    let all = [
        "FixPos", "FixNeg", "Null", "True", "False", "U8", "U16", "U32", "U64", "I8", "I16", "I32",
        "I64", "F64", "FixStr", "Str8", "Str16", "Str32", "Bin8", "Bin16", "Bin32", "FixArray",
        "Array16", "Array32", "FixMap", "Map16", "Map32", "FixExt1", "FixExt2", "FixExt4",
        "FixExt8", "FixExt16", "Ext8", "Ext16", "Ext32",
    ];
    let missing: Vec<_> = all.iter().filter(|m| !seen.contains(**m)).collect();
    assert!(missing.is_empty(), "no vector starts with {missing:?}");
}
