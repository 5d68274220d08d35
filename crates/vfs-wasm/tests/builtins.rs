//! The shim replaces SQLite built-ins that ignored the time budget (LIKE,
//! GLOB, instr, replace, trim, json_patch): each replacement must answer exactly as
//! SQLite's own does. Native SQLite built from the same amalgamation (through
//! rusqlite) is the reference, over generated inputs that stress the corners:
//! wildcards, escapes, GLOB sets, ASCII case, multi-byte and invalid UTF-8.

use std::path::PathBuf;
use std::sync::Arc;

use vfs_core::MemoryKv;
use vfs_wasm::{DbId, Instance, InstanceConfig, ModuleConfig, SqliteModule, Value};

fn instance() -> (Instance, DbId) {
    let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vfs-wasm-module-cache");
    let module = SqliteModule::shared(&ModuleConfig {
        cache_dir: Some(cache_dir),
    })
    .expect("module loads");
    let mut inst = Instance::new(&module, InstanceConfig::default()).expect("instance");
    let db = inst.open("builtins", Arc::new(MemoryKv::new())).unwrap();
    (inst, db)
}

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Bytes drawn from pieces that matter to the matchers.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"a",
            b"A",
            b"b",
            b"B",
            b"z",
            b"%",
            b"_",
            b"*",
            b"?",
            b"[",
            b"]",
            b"^",
            b"-",
            b"\\",
            b"x",
            b" ",
            "é".as_bytes(),
            "É".as_bytes(),
            "日".as_bytes(),
            b"\xc3",
            b"\x80",
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b"\xff",
        ];
        let len = self.below(max + 1);
        let mut out = Vec::new();
        for _ in 0..len {
            out.extend_from_slice(PIECES[self.below(PIECES.len())]);
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn text(bytes: &[u8]) -> String {
    format!("cast(x'{}' as text)", hex(bytes))
}

/// Runs `exprs` as one SELECT in both engines and compares every column.
fn compare(inst: &mut Instance, db: DbId, native: &rusqlite::Connection, exprs: &[String]) {
    let sql = format!("SELECT {}", exprs.join(", "));
    let ours = inst.query(db, &sql, &[]);
    let theirs = native.query_row(&sql, [], |row| {
        (0..exprs.len())
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => Value::Integer(n),
                    rusqlite::types::ValueRef::Real(r) => Value::Real(r),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            })
            .collect::<rusqlite::Result<Vec<Value>>>()
    });
    match (ours, theirs) {
        (Ok(rows), Ok(expected)) => {
            for (i, expr) in exprs.iter().enumerate() {
                assert_eq!(rows.rows[0][i], expected[i], "{expr}");
            }
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!("{sql}\nours: {ours:?}\nSQLite: {theirs:?}"),
    }
}

#[test]
fn like_and_glob_answer_as_sqlite_does() {
    let (mut inst, db) = instance();
    let native = rusqlite::Connection::open_in_memory().unwrap();
    let mut g = Gen(0x5eed_1234_abcd_0001);
    for _ in 0..400 {
        let mut exprs = Vec::new();
        for _ in 0..25 {
            let (p, s) = (g.bytes(8), g.bytes(10));
            exprs.push(format!("{} LIKE {}", text(&s), text(&p)));
            exprs.push(format!("{} GLOB {}", text(&s), text(&p)));
            // A single-character escape, sometimes one of the wildcards.
            let esc = ["\\", "%", "_", "a", "é", "["][g.below(6)];
            exprs.push(format!("like({}, {}, '{esc}')", text(&p), text(&s)));
        }
        compare(&mut inst, db, &native, &exprs);
    }
    // Fixed corners: NULLs, bad escapes, empty strings, sets.
    for expr in [
        "NULL LIKE 'a'",
        "'a' LIKE NULL",
        "like('a', 'a', NULL)",
        "'' LIKE ''",
        "'' LIKE '%'",
        "'a' LIKE ''",
        "'abc' GLOB '[a-c]*'",
        "']' GLOB '[]]'",
        "'-' GLOB '[a-]'",
        "'b' GLOB '[^a]'",
        "'a' GLOB '[a'",
        "'a%' LIKE 'a!%' ESCAPE '!'",
        "'a' LIKE 'a!' ESCAPE '!'",
        "'ab' LIKE 'a%' ESCAPE '%'",
        "'a_' LIKE 'a__' ESCAPE '_'",
        "'ÉCOLE' LIKE 'école'",
        "'ABC' LIKE 'abc'",
        "123 LIKE '1%'",
        "x'41' LIKE 'a'",
    ] {
        compare(&mut inst, db, &native, &[expr.to_owned()]);
    }
    for bad in ["like('a', 'a', 'ab')", "like('a', 'a', '')"] {
        assert!(
            inst.query(db, &format!("SELECT {bad}"), &[]).is_err(),
            "{bad}"
        );
        assert!(
            native
                .query_row(&format!("SELECT {bad}"), [], |_| Ok(()))
                .is_err()
        );
    }
}

#[test]
fn instr_replace_and_trim_answer_as_sqlite_does() {
    let (mut inst, db) = instance();
    let native = rusqlite::Connection::open_in_memory().unwrap();
    let mut g = Gen(0x5eed_1234_abcd_0002);
    for _ in 0..300 {
        let mut exprs = Vec::new();
        for _ in 0..20 {
            let (a, b, c) = (g.bytes(10), g.bytes(3), g.bytes(3));
            exprs.push(format!("instr({}, {})", text(&a), text(&b)));
            exprs.push(format!("instr(x'{}', x'{}')", hex(&a), hex(&b)));
            exprs.push(format!("instr(x'{}', {})", hex(&a), text(&b)));
            exprs.push(format!(
                "hex(replace({}, {}, {}))",
                text(&a),
                text(&b),
                text(&c)
            ));
            exprs.push(format!("hex(trim({}, {}))", text(&a), text(&b)));
            exprs.push(format!("hex(ltrim({}, {}))", text(&a), text(&b)));
            exprs.push(format!("hex(rtrim({}, {}))", text(&a), text(&b)));
        }
        compare(&mut inst, db, &native, &exprs);
    }
}

#[test]
fn json_patch_answers_as_sqlite_does() {
    let (mut inst, db) = instance();
    let native = rusqlite::Connection::open_in_memory().unwrap();
    let cases = [
        r#"json_patch('{"a":1,"b":2}', '{"b":null,"c":3}')"#,
        r#"json_patch('{"a":{"x":1}}', '{"a":{"y":2}}')"#,
        r#"json_patch('[1,2]', '{"a":1}')"#,
        r#"json_patch('{"a":1}', '[1]')"#,
        r#"json_patch('{"a":1}', '"text"')"#,
        r"json_patch(NULL, '{}')",
        r"json_patch('{}', NULL)",
        r#"json_array(json_patch('{"a":1}', '{}'))"#,
        r#"json_patch(json('{"a": [1, 2]}'), json_object('b', 2))"#,
        r#"hex(jsonb_patch('{"a":1}', '{"b":2}'))"#,
        r#"json(jsonb_patch(jsonb('{"a":1}'), jsonb('{"a":null}')))"#,
        r#"json_patch('{a:1, /* json5 */ b:2,}', '{"c":3}')"#,
        r"typeof(json_patch('{}', '{}'))",
        r"typeof(jsonb_patch('{}', '{}'))",
        r#"json_patch('{"a":1}', 5)"#,
    ];
    for expr in cases {
        compare(&mut inst, db, &native, &[expr.to_owned()]);
    }
    for bad in [r"json_patch('{', '{}')", r"jsonb_patch('{}', '[')"] {
        let ours = inst.query(db, &format!("SELECT {bad}"), &[]).unwrap_err();
        let theirs = native
            .query_row(&format!("SELECT {bad}"), [], |_| Ok(()))
            .unwrap_err();
        assert!(
            ours.to_string().contains("malformed JSON")
                && theirs.to_string().contains("malformed JSON"),
            "{ours} / {theirs}"
        );
    }
}
