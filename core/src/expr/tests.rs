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

/// Runs `f` on a thread with the 2 MiB stack of a tokio worker, where the operator validates.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// What the operator does with a condition: parse it, check it, evaluate it, drop it.
fn parse_check_evaluate(text: &str) -> Result<bool, ExprError> {
    let condition = Condition::parse(text)?;
    condition.check_types(types);
    condition.references();
    condition.evaluate(values)
}

#[test]
fn hostile_conditions_are_errors_on_a_small_stack() {
    let results = on_small_stack(|| {
        let n = 100_000;
        let parens = format!("{}true{}", "(".repeat(n), ")".repeat(n));
        let unclosed = "(".repeat(n);
        let nots = format!("{}true", "!".repeat(n));
        let mixed = format!("{}true", "!(".repeat(n));
        [parens, unclosed, nots, mixed].map(|text| parse_check_evaluate(&text))
    });
    for result in results {
        assert!(
            matches!(result, Err(ExprError::TooDeep { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn long_chains_are_flat_and_evaluate_on_a_small_stack() {
    let results = on_small_stack(|| {
        let n = 100_000;
        let ands = vec!["{{params.epochs}} > 1"; n].join(" && ");
        let ors = format!("{} || true", vec!["false"; n].join(" || "));
        let mixed = vec!["true && false"; n].join(" || ");
        [ands, ors, mixed].map(|text| parse_check_evaluate(&text))
    });
    assert_eq!(results, [Ok(true), Ok(true), Ok(false)]);
}

#[test]
fn nesting_up_to_the_limit_parses() {
    let deepest = format!(
        "{}true{}",
        "(".repeat(MAX_NESTING - 1),
        ")".repeat(MAX_NESTING - 1)
    );
    assert_eq!(
        Condition::parse(&format!("!{deepest}"))
            .unwrap()
            .evaluate(values),
        Ok(false)
    );
    let too_deep = format!("!!{deepest}");
    let err = Condition::parse(&too_deep).unwrap_err();
    assert_eq!(err, ExprError::TooDeep { column: 33 });
    assert_eq!(
        err.to_string(),
        "condition nests parentheses and `!` deeper than 32 levels (column 33); split it or \
         simplify it"
    );
}

#[test]
fn long_operands_are_not_echoed_whole() {
    let long = "x".repeat(1 << 20);
    let err = Condition::parse(&format!("'{long}' < 1")).unwrap();
    let message = err.evaluate(values).unwrap_err().to_string();
    assert!(message.len() < 400, "{message}");
    let problems = Condition::parse(&format!("{long} > 1"))
        .unwrap()
        .check_types(types);
    assert!(problems.iter().all(|p| p.len() < 400), "{problems:?}");
    assert!(problems[0].contains("(1048576 bytes)"), "{problems:?}");
}

/// A condition built from random pieces: nested, chained and negated, with depth up to
/// twice the limit.
fn condition_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just("true".to_string()),
        Just("{{params.epochs}} > 3".to_string()),
        Just("{{params.name}} == resnet".to_string()),
        Just("'a' != b".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
    ];
    leaf.prop_recursive(2 * MAX_NESTING as u32, 4096, 8, |inner| {
        prop_oneof![
            inner.clone().prop_map(|c| format!("({c})")),
            inner.clone().prop_map(|c| format!("!{c}")),
            proptest::collection::vec(inner.clone(), 2..8).prop_map(|v| v.join(" && ")),
            proptest::collection::vec(inner, 2..8).prop_map(|v| v.join(" || ")),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Deep and wide conditions parse or give an error, and never overflow a 2 MiB stack.
    #[test]
    fn deep_and_wide_conditions_never_overflow(text in condition_text(), repeat in 1usize..2000) {
        let deep = format!("{}{text}{}", "(".repeat(repeat), ")".repeat(repeat));
        let results = on_small_stack(move || {
            [text, deep].map(|t| parse_check_evaluate(&t).map_err(|e| e.reason()))
        });
        let [_, deep] = results;
        if repeat >= MAX_NESTING {
            proptest::prop_assert_eq!(deep, Err("ConditionTooDeep"));
        }
    }
}
