//! Table-driven and property tests of `when` conditions.

use super::*;

fn values(r: &Reference) -> Option<String> {
    let v = match r.to_string().as_str() {
        "{{params.epochs}}" => "5",
        "{{params.lr}}" => "0.01",
        "{{params.flag}}" => "True",
        "{{params.off}}" => "false",
        "{{params.name}}" => "resnet",
        "{{params.region}}" => "eu",
        "{{steps.train.outputs.params.accuracy}}" => "0.91\n",
        "{{item}}" => "3",
        _ => return None,
    };
    Some(v.to_string())
}

#[test]
fn evaluates() {
    let cases: &[(&str, bool)] = &[
        ("true", true),
        ("TRUE", true),
        ("false", false),
        ("{{params.flag}}", true),
        ("{{params.off}}", false),
        ("{{params.name}}", false),
        ("!{{params.off}}", true),
        ("{{params.epochs}} == 5", true),
        ("{{params.epochs}} == 5.0", true),
        ("{{params.epochs}} != 5", false),
        ("{{params.epochs}} > 4", true),
        ("{{params.epochs}} >= 5", true),
        ("{{params.epochs}} < 10", true),
        ("{{params.epochs}} <= 4", false),
        ("{{params.lr}} < 1e-1", true),
        ("{{steps.train.outputs.params.accuracy}} >= 0.9", true),
        ("{{params.epochs}} > 10", false),
        ("'5' == 5", true),
        ("{{params.name}} == resnet", true),
        ("{{params.name}} == 'resnet'", true),
        ("{{params.name}} == \"resnet\"", true),
        ("{{params.name}} != vit", true),
        ("{{params.flag}} == true", true),
        ("{{params.flag}} == 'TRUE'", true),
        ("'{{params.region}}-west' == eu-west", true),
        ("{{params.region}}-west == 'eu-west'", true),
        ("{{params.epochs}} > 1 && {{params.name}} == resnet", true),
        ("{{params.epochs}} > 10 || {{params.name}} == resnet", true),
        ("{{params.epochs}} > 10 || {{params.name}} == vit", false),
        ("false && true || true", true),
        ("false && (true || true)", false),
        ("!({{params.epochs}} > 1)", false),
        ("!{{params.epochs}} == 4", true),
        ("!!true", true),
        ("{{ item }} == 3", true),
        ("'a b' == 'a b'", true),
        ("'it\\'s' == \"it's\"", true),
    ];
    for (text, expected) in cases {
        let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.evaluate(values), Ok(*expected), "{text}");
    }
}

#[test]
fn evaluation_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "{{params.name}} > 3",
            "cannot compare \"resnet\" > \"3\": `>` needs two numbers",
        ),
        (
            "abc <= def",
            "cannot compare \"abc\" <= \"def\": `<=` needs two numbers",
        ),
        ("{{params.missing}} == 1", "{{params.missing}} has no value"),
        (
            "'x{{params.missing}}' == 1",
            "{{params.missing}} has no value",
        ),
    ];
    for (text, message) in cases {
        let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let err = c.evaluate(values).expect_err(text);
        assert_eq!(err.to_string(), *message, "{text}");
    }
}

#[test]
fn short_circuits() {
    let c = Condition::parse("false && {{params.missing}} == 1").unwrap();
    assert_eq!(c.evaluate(values), Ok(false));
    let c = Condition::parse("true || {{params.missing}} == 1").unwrap();
    assert_eq!(c.evaluate(values), Ok(true));
}

#[test]
fn syntax_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "empty condition"),
        ("   ", "empty condition"),
        ("a = b", "unexpected `=`; did you mean `==`? (column 3)"),
        ("a & b", "unexpected `&`; did you mean `&&`? (column 3)"),
        ("a | b", "unexpected `|`; did you mean `||`? (column 3)"),
        ("a ==", "expected an operand at the end (column 5)"),
        ("a == && b", "expected an operand, found `&&` (column 6)"),
        ("(a == b", "expected `)` at the end (column 8)"),
        ("a == b)", "unexpected `)` (column 7)"),
        ("a b", "unexpected operand b (column 3)"),
        (
            "1 < 2 < 3",
            "comparisons cannot be chained; join them with `&&` (column 7)",
        ),
        (
            "'abc == 1",
            "unterminated string starting with ' (column 1)",
        ),
        ("&& a", "expected an operand, found `&&` (column 1)"),
        ("|| a", "expected an operand, found `||` (column 1)"),
        ("!", "expected an operand at the end (column 2)"),
        ("{{params.x", "unclosed placeholder starting at byte 0"),
        (
            "{{param.x}} == 1",
            "unknown reference \"{{param.x}}\" (expected params.*, inputs.*, outputs.*, steps.*.outputs.*, item or index)",
        ),
    ];
    for (text, message) in cases {
        let err = Condition::parse(text).expect_err(text);
        assert_eq!(err.to_string(), *message, "{text}");
    }
}

#[test]
fn references_in_order() {
    let c = Condition::parse(
        "{{params.a}} > 1 && ('{{steps.s.outputs.params.b}}/x' == y || !{{item}})",
    )
    .unwrap();
    let refs: Vec<String> = c.references().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        refs,
        ["{{params.a}}", "{{steps.s.outputs.params.b}}", "{{item}}"]
    );
}

fn types(r: &Reference) -> Option<ParamType> {
    match r {
        Reference::Param(n) => match n.as_str() {
            "epochs" => Some(ParamType::Int),
            "lr" => Some(ParamType::Float),
            "flag" => Some(ParamType::Bool),
            "tags" => Some(ParamType::List),
            "name" => Some(ParamType::String),
            _ => None,
        },
        Reference::StepParam { .. } => Some(ParamType::Float),
        _ => None,
    }
}

#[test]
fn type_checks() {
    let cases: &[(&str, &[&str])] = &[
        ("{{params.epochs}} > 3", &[]),
        ("{{params.lr}} <= {{steps.t.outputs.params.acc}}", &[]),
        ("{{params.flag}}", &[]),
        ("!{{params.flag}} && {{params.name}} == x", &[]),
        ("{{params.name}} > 3", &[]),
        ("{{params.unknown}} == abc", &[]),
        ("{{params.flag}} == true", &[]),
        ("{{params.epochs}} == '5'", &[]),
        ("{{item}} > 2", &[]),
        (
            "{{params.flag}} > 1",
            &["`>` cannot order a bool ({{params.flag}}); only numbers can be ordered"],
        ),
        (
            "{{params.tags}} < 3",
            &["`<` cannot order a list ({{params.tags}}); only numbers can be ordered"],
        ),
        (
            "{{params.epochs}} >= 'abc'",
            &["`>=` cannot order a string literal ('abc'); only numbers can be ordered"],
        ),
        (
            "{{params.flag}} == 1",
            &["`==` compares a bool ({{params.flag}}) with a number (1), which can never be equal"],
        ),
        (
            "{{params.epochs}} != true",
            &[
                "`!=` compares a number ({{params.epochs}}) with a bool (true), which can never be equal",
            ],
        ),
        (
            "{{params.epochs}} == five",
            &[
                "`==` compares a number ({{params.epochs}}) with a string literal (five), which can never be equal",
            ],
        ),
        (
            "{{params.tags}} == 1",
            &["`==` compares a list ({{params.tags}}) with a number (1), which can never be equal"],
        ),
        (
            "{{params.epochs}}",
            &[
                "{{params.epochs}} is a number, not a condition; compare it (e.g. `{{params.epochs}} > 0`)",
            ],
        ),
        (
            "yes",
            &["yes is not a condition: a lone operand is true only when it is `true`"],
        ),
        (
            "{{params.flag}} > 1 || !({{params.tags}} == true)",
            &[
                "`>` cannot order a bool ({{params.flag}}); only numbers can be ordered",
                "`==` compares a list ({{params.tags}}) with a bool (true), which can never be equal",
            ],
        ),
    ];
    for (text, expected) in cases {
        let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.check_types(types), *expected, "{text}");
    }
}

proptest::proptest! {
    #[test]
    fn parsing_never_panics(text in "[ a1.=!<>&|()'\"{}-]{0,40}|\\PC{0,40}") {
        let _ = Condition::parse(&text);
    }

    #[test]
    fn numeric_comparisons_agree_with_f64(a in -1e6f64..1e6, b in -1e6f64..1e6) {
        for (op, expected) in [("<", a < b), ("<=", a <= b), (">", a > b), ("==", a == b)] {
            let c = Condition::parse(&format!("{a} {op} {b}")).unwrap();
            proptest::prop_assert_eq!(c.evaluate(|_| None), Ok(expected));
        }
    }
}

#[test]
fn numbers_are_strict() {
    for (text, number) in [
        ("5", true),
        ("-5", true),
        ("+0.5", true),
        (".5", true),
        ("5.", true),
        ("1e3", true),
        ("1E-3", true),
        ("inf", false),
        ("NaN", false),
        ("0x10", false),
        ("1e", false),
        ("-", false),
        (".", false),
        ("1.2.3", false),
        ("", false),
    ] {
        assert_eq!(parse_number(text).is_some(), number, "{text}");
    }
}
