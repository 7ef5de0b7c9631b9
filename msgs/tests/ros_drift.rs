//! The ROS 2 interface package (`msgs/ros/reflex_msgs`) mirrors the Rust wire structs
//! field for field: same names, same order, same types. This test records the schema
//! the Rust types actually serialize (a tiny serde `Serializer` that notes each
//! field's name and type instead of writing bytes) and compares it with every parsed
//! `msg/*.msg` file, so the two cannot drift apart.
#![cfg(feature = "std")]

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use common::samples;
use reflex_msgs::*;
use serde::ser::{self, Serialize};

/// A field as ROS declares it: `type name`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    ty: String,
    name: String,
}

/// Message name → fields, in order.
type Schema = BTreeMap<String, Vec<Field>>;

// ---------------------------------------------------------------------------
// The Rust side: record what serde sees.

#[derive(Debug)]
struct Unrepresentable(String);

impl fmt::Display for Unrepresentable {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unrepresentable {}

impl ser::Error for Unrepresentable {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

fn refuse<T>(what: &str) -> Result<T, Unrepresentable> {
    Err(Unrepresentable(format!(
        "{what} has no ROS 2 message spelling; use a flat struct"
    )))
}

/// Serializes a value into its ROS type name, recording nested structs in `schema`.
struct TypeOf<'a> {
    schema: &'a mut Schema,
}

/// Collects sequence / array elements, which must all have one type.
struct Elements<'a> {
    schema: &'a mut Schema,
    elem: Option<String>,
    fixed_len: Option<usize>,
}

/// Collects the fields of a struct.
struct Fields<'a> {
    schema: &'a mut Schema,
    name: &'static str,
    fields: Vec<Field>,
}

fn type_of<T: ?Sized + Serialize>(
    schema: &mut Schema,
    value: &T,
) -> Result<String, Unrepresentable> {
    value.serialize(TypeOf { schema })
}

impl<'a> ser::Serializer for TypeOf<'a> {
    type Ok = String;
    type Error = Unrepresentable;
    type SerializeSeq = Elements<'a>;
    type SerializeTuple = Elements<'a>;
    type SerializeTupleStruct = ser::Impossible<String, Unrepresentable>;
    type SerializeTupleVariant = ser::Impossible<String, Unrepresentable>;
    type SerializeMap = ser::Impossible<String, Unrepresentable>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = ser::Impossible<String, Unrepresentable>;

    fn serialize_bool(self, _: bool) -> Result<String, Unrepresentable> {
        Ok("bool".into())
    }
    fn serialize_i8(self, _: i8) -> Result<String, Unrepresentable> {
        Ok("int8".into())
    }
    fn serialize_i16(self, _: i16) -> Result<String, Unrepresentable> {
        Ok("int16".into())
    }
    fn serialize_i32(self, _: i32) -> Result<String, Unrepresentable> {
        Ok("int32".into())
    }
    fn serialize_i64(self, _: i64) -> Result<String, Unrepresentable> {
        Ok("int64".into())
    }
    fn serialize_u8(self, _: u8) -> Result<String, Unrepresentable> {
        Ok("uint8".into())
    }
    fn serialize_u16(self, _: u16) -> Result<String, Unrepresentable> {
        Ok("uint16".into())
    }
    fn serialize_u32(self, _: u32) -> Result<String, Unrepresentable> {
        Ok("uint32".into())
    }
    fn serialize_u64(self, _: u64) -> Result<String, Unrepresentable> {
        Ok("uint64".into())
    }
    fn serialize_f32(self, _: f32) -> Result<String, Unrepresentable> {
        Ok("float32".into())
    }
    fn serialize_f64(self, _: f64) -> Result<String, Unrepresentable> {
        Ok("float64".into())
    }
    fn serialize_char(self, _: char) -> Result<String, Unrepresentable> {
        refuse("a Rust char")
    }
    fn serialize_str(self, _: &str) -> Result<String, Unrepresentable> {
        Ok("string".into())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, Unrepresentable> {
        Ok("uint8[]".into())
    }
    fn serialize_none(self) -> Result<String, Unrepresentable> {
        refuse("an Option")
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<String, Unrepresentable> {
        refuse("an Option")
    }
    fn serialize_unit(self) -> Result<String, Unrepresentable> {
        refuse("a unit")
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Unrepresentable> {
        refuse("a unit struct")
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<String, Unrepresentable> {
        refuse("an enum")
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, Unrepresentable> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Unrepresentable> {
        refuse("an enum")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Elements<'a>, Unrepresentable> {
        Ok(Elements {
            schema: self.schema,
            elem: None,
            fixed_len: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Elements<'a>, Unrepresentable> {
        Ok(Elements {
            schema: self.schema,
            elem: None,
            fixed_len: Some(len),
        })
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unrepresentable> {
        refuse("a tuple struct")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unrepresentable> {
        refuse("an enum")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unrepresentable> {
        refuse("a map")
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Fields<'a>, Unrepresentable> {
        Ok(Fields {
            schema: self.schema,
            name,
            fields: Vec::new(),
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unrepresentable> {
        refuse("an enum")
    }
    fn is_human_readable(&self) -> bool {
        false // the CDR form, not the JSON one
    }
}

impl Elements<'_> {
    fn add<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unrepresentable> {
        let ty = type_of(self.schema, value)?;
        match &self.elem {
            Some(seen) if *seen != ty => refuse(&format!("a sequence mixing {seen} and {ty}")),
            _ => {
                self.elem = Some(ty);
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<String, Unrepresentable> {
        // An empty sequence does not say its element type: `?`, filled in from
        // another recording of the same struct (see `merge`).
        let elem = self.elem.unwrap_or_else(|| UNKNOWN.to_string());
        Ok(match self.fixed_len {
            Some(n) => format!("{elem}[{n}]"),
            None => format!("{elem}[]"),
        })
    }
}

impl ser::SerializeSeq for Elements<'_> {
    type Ok = String;
    type Error = Unrepresentable;
    fn serialize_element<T: ?Sized + Serialize>(
        &mut self,
        value: &T,
    ) -> Result<(), Unrepresentable> {
        self.add(value)
    }
    fn end(self) -> Result<String, Unrepresentable> {
        self.finish()
    }
}

impl ser::SerializeTuple for Elements<'_> {
    type Ok = String;
    type Error = Unrepresentable;
    fn serialize_element<T: ?Sized + Serialize>(
        &mut self,
        value: &T,
    ) -> Result<(), Unrepresentable> {
        self.add(value)
    }
    fn end(self) -> Result<String, Unrepresentable> {
        self.finish()
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = String;
    type Error = Unrepresentable;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unrepresentable> {
        let ty = type_of(self.schema, value)?;
        self.fields.push(Field {
            ty,
            name: key.to_string(),
        });
        Ok(())
    }
    fn end(self) -> Result<String, Unrepresentable> {
        let fields = match self.schema.get(self.name) {
            Some(seen) => merge(seen, &self.fields).unwrap_or_else(|| {
                panic!(
                    "{} serializes two different ways: {seen:?} vs {:?}",
                    self.name, self.fields
                )
            }),
            None => self.fields,
        };
        self.schema.insert(self.name.to_string(), fields);
        Ok(self.name.to_string())
    }
}

/// Element type of an empty sequence.
const UNKNOWN: &str = "?";

/// Two recordings of one struct, agreeing field by field where both are known.
fn merge(a: &[Field], b: &[Field]) -> Option<Vec<Field>> {
    if a.len() != b.len() {
        return None;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let unknown = |f: &Field| f.ty.starts_with(UNKNOWN);
            let same_shape =
                x.ty.trim_start_matches(|c| c != '[') == y.ty.trim_start_matches(|c| c != '[');
            match () {
                _ if x.name != y.name => None,
                _ if x.ty == y.ty => Some(x.clone()),
                _ if unknown(x) && same_shape => Some(y.clone()),
                _ if unknown(y) && same_shape => Some(x.clone()),
                _ => None,
            }
        })
        .collect()
}

/// Records `msg`'s struct (and every struct nested in it) into `schema`; returns the
/// struct's name.
fn record<T: Serialize>(schema: &mut Schema, msg: &T) -> String {
    type_of(schema, msg).unwrap_or_else(|e| panic!("{e}"))
}

/// The schema of every top-level message, as serialized by the Rust types, and the
/// names of the top-level messages.
fn rust_schema() -> (Schema, Vec<String>) {
    let mut schema = Schema::new();
    let top = vec![
        checked_record(&mut schema, &samples::observation()),
        checked_record(&mut schema, &samples::action_command()),
        checked_record(&mut schema, &samples::transition()),
        checked_record(&mut schema, &samples::transition_batch()),
        checked_record(&mut schema, &samples::policy_spec()),
        checked_record(&mut schema, &samples::policy_update()),
        checked_record(&mut schema, &samples::status()),
        checked_record(&mut schema, &samples::step_info()),
    ];
    // The discrete variants serialize to the same structs (recording asserts that).
    record(&mut schema, &Action::Discrete(1));
    record(&mut schema, &ActionSpace::Discrete { n: 2 });
    record(&mut schema, &TransitionBatch::default());
    (schema, top)
}

/// Records a top-level message and checks its `WireMessage::NAME`.
fn checked_record<T: WireMessage>(schema: &mut Schema, msg: &T) -> String {
    let name = record(schema, msg);
    assert_eq!(name, T::NAME, "serde name and WireMessage::NAME differ");
    name
}

// ---------------------------------------------------------------------------
// The ROS side: parse msg/*.msg.

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ros/reflex_msgs")
}

#[derive(Debug, Default)]
struct MsgFile {
    fields: Vec<Field>,
    /// Constant name → (type, value).
    constants: BTreeMap<String, (String, String)>,
}

/// Parses the subset of the `.msg` grammar reflex uses: comments, `type name` fields,
/// `TYPE NAME=value` constants. Bounded sequences `T[<=N]` compare as `T[]` (same
/// CDR), bounded strings `string<=N` as `string`.
fn parse_msg(text: &str, file: &str) -> MsgFile {
    let mut msg = MsgFile::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (ty, rest) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{file}:{}: expected `type name`", i + 1));
        let rest = rest.trim();
        if let Some((name, value)) = rest.split_once('=') {
            msg.constants.insert(
                name.trim().to_string(),
                (ty.to_string(), value.trim().to_string()),
            );
            continue;
        }
        assert!(
            !rest.contains(char::is_whitespace),
            "{file}:{}: default values are not used in reflex_msgs",
            i + 1
        );
        msg.fields.push(Field {
            ty: normalize_type(ty),
            name: rest.to_string(),
        });
    }
    msg
}

fn normalize_type(ty: &str) -> String {
    let ty = match ty.split_once("[<=") {
        Some((elem, _)) => format!("{elem}[]"),
        None => ty.to_string(),
    };
    match ty.split_once("<=") {
        Some(("string", _)) => "string".to_string(),
        _ => ty,
    }
}

fn ros_schema() -> BTreeMap<String, MsgFile> {
    let dir = package_dir().join("msg");
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&dir).expect("msg/ exists") {
        let path = entry.unwrap().path();
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("msg"),
            "unexpected file {path:?} in msg/"
        );
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = fs::read_to_string(&path).unwrap();
        files.insert(name.clone(), parse_msg(&text, &format!("{name}.msg")));
    }
    files
}

/// ROS 2 field names: lowercase letters, digits and single underscores, starting
/// with a letter, not ending with an underscore.
fn is_ros_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_lowercase)
        && !name.ends_with('_')
        && !name.contains("__")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

// ---------------------------------------------------------------------------

#[test]
fn every_msg_file_matches_its_rust_struct() {
    let (rust, _) = rust_schema();
    let ros = ros_schema();
    for (name, fields) in &rust {
        for field in fields {
            assert!(
                !field.ty.starts_with(UNKNOWN),
                "{name}.{}: no sample has a non-empty value, element type unknown",
                field.name
            );
        }
    }
    let rust_names: Vec<_> = rust.keys().collect();
    let ros_names: Vec<_> = ros.keys().collect();
    assert_eq!(
        rust_names, ros_names,
        "every wire struct needs a msg/<Name>.msg and vice versa"
    );
    for (name, fields) in &rust {
        let lines = |fields: &[Field]| -> Vec<String> {
            fields
                .iter()
                .map(|f| format!("{} {}", f.ty, f.name))
                .collect()
        };
        assert_eq!(
            lines(&ros[name].fields),
            lines(fields),
            "msg/{name}.msg differs from the Rust struct (left: .msg, right: Rust)"
        );
        for field in fields {
            assert!(
                is_ros_field_name(&field.name),
                "{name}.{} is not a valid ROS 2 field name",
                field.name
            );
        }
    }
}

#[test]
fn top_level_messages_lead_with_the_wire_version() {
    let (rust, top) = rust_schema();
    let ros = ros_schema();
    for name in rust.keys() {
        let first = &rust[name][0];
        let msg = &ros[name];
        if top.contains(name) {
            assert_eq!(
                first,
                &Field {
                    ty: "uint16".into(),
                    name: "wire_version".into()
                },
                "{name} must start with uint16 wire_version"
            );
            assert_eq!(
                msg.constants.get("WIRE_VERSION"),
                Some(&("uint16".to_string(), WIRE_VERSION.to_string())),
                "{name}.msg must declare uint16 WIRE_VERSION={WIRE_VERSION}"
            );
        } else {
            assert!(
                rust[name].iter().all(|f| f.name != "wire_version"),
                "nested {name} must not carry a wire_version"
            );
        }
    }
}

#[test]
fn msg_constants_match_rust_constants() {
    let ros = ros_schema();
    let expected: &[(&str, &str, u8)] = &[
        ("Action", "KIND_DISCRETE", KIND_DISCRETE),
        ("Action", "KIND_CONTINUOUS", KIND_CONTINUOUS),
        ("ActionSpace", "KIND_DISCRETE", KIND_DISCRETE),
        ("ActionSpace", "KIND_BOX", KIND_BOX),
    ];
    for (msg, name, value) in expected {
        assert_eq!(
            ros[*msg].constants.get(*name),
            Some(&("uint8".to_string(), value.to_string())),
            "{msg}.msg constant {name}"
        );
    }
    for (msg, file) in &ros {
        for name in file.constants.keys() {
            assert!(
                name == "WIRE_VERSION" || expected.iter().any(|(m, n, _)| m == msg && n == name),
                "{msg}.msg constant {name} has no Rust counterpart checked here"
            );
        }
    }
}

#[test]
fn fixed_capacity_types_have_the_same_schema() {
    let (mut rust, _) = rust_schema();
    // Recording asserts that a struct serializes one way only: the fixed-capacity
    // types must record exactly the growable types' fields.
    record(
        &mut rust,
        &ObservationN::<4>::try_from(&samples::observation()).unwrap(),
    );
    record(
        &mut rust,
        &ActionCommandN::<2>::try_from(&samples::action_command()).unwrap(),
    );
    record(
        &mut rust,
        &TransitionN::<4, 2, 3>::try_from(&samples::transition()).unwrap(),
    );
}

#[test]
fn package_builds_every_msg_file() {
    let dir = package_dir();
    let cmake = fs::read_to_string(dir.join("CMakeLists.txt")).unwrap();
    let listed: Vec<String> = cmake
        .split('"')
        .filter(|s| s.starts_with("msg/") && s.ends_with(".msg"))
        .map(|s| s["msg/".len()..s.len() - ".msg".len()].to_string())
        .collect();
    let files: Vec<String> = ros_schema().into_keys().collect();
    assert_eq!(
        listed, files,
        "CMakeLists.txt must list every msg/*.msg, sorted"
    );
    assert!(cmake.contains("rosidl_generate_interfaces(${PROJECT_NAME}"));

    let package = fs::read_to_string(dir.join("package.xml")).unwrap();
    for needle in [
        "<package format=\"3\">",
        "<name>reflex_msgs</name>",
        "<buildtool_depend>rosidl_default_generators</buildtool_depend>",
        "<exec_depend>rosidl_default_runtime</exec_depend>",
        "<member_of_group>rosidl_interface_packages</member_of_group>",
    ] {
        assert!(package.contains(needle), "package.xml lacks {needle}");
    }
    assert_eq!(ROS_PACKAGE, "reflex_msgs");
}

#[test]
fn the_parser_understands_the_grammar() {
    let msg = parse_msg(
        "# comment\nuint8 A=1  # c\n\nfloat32[] xs # units\nuint8[<=64] sig\nuint8[32] d\nstring<=8 s\nBoxSpace b\n",
        "T.msg",
    );
    let fields: Vec<_> = msg
        .fields
        .iter()
        .map(|f| format!("{} {}", f.ty, f.name))
        .collect();
    assert_eq!(
        fields,
        [
            "float32[] xs",
            "uint8[] sig",
            "uint8[32] d",
            "string s",
            "BoxSpace b"
        ]
    );
    assert_eq!(msg.constants["A"], ("uint8".to_string(), "1".to_string()));
    assert!(is_ros_field_name("latency_p50_us"));
    assert!(!is_ros_field_name("Bad"));
    assert!(!is_ros_field_name("a__b"));
    assert!(!is_ros_field_name("trailing_"));
}
