//! Kubernetes label selectors (`metav1.LabelSelector`) with the apimachinery
//! matching rules that MetalLB inherits for node, pool and service selectors.

use std::collections::BTreeMap;
use std::fmt;

/// Labels of a Kubernetes object.
pub type Labels = BTreeMap<String, String>;

/// `matchLabels` and `matchExpressions`, ANDed. The empty selector (`{}`)
/// matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

/// The four operators `metav1.LabelSelector` accepts (case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A selector Kubernetes would refuse to convert (`LabelSelectorAsSelector`);
/// MetalLB then rejects the whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown label selector operator {0:?}: use In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    #[error("label selector requirement on {key:?}: {operator} needs at least one value")]
    MissingValues {
        key: String,
        operator: SelectorOperator,
    },
    #[error("label selector requirement on {key:?}: {operator} takes no values")]
    UnexpectedValues {
        key: String,
        operator: SelectorOperator,
    },
}

impl SelectorOperator {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        match text {
            "In" => Ok(Self::In),
            "NotIn" => Ok(Self::NotIn),
            "Exists" => Ok(Self::Exists),
            "DoesNotExist" => Ok(Self::DoesNotExist),
            other => Err(SelectorError::UnknownOperator(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }
}

impl fmt::Display for SelectorOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LabelSelectorRequirement {
    pub fn new(key: &str, operator: SelectorOperator, values: &[&str]) -> Self {
        Self {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// `NotIn` and `DoesNotExist` match objects without the key, as in
    /// apimachinery's `labels.Requirement.Matches`.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }

    pub fn validate(&self) -> Result<(), SelectorError> {
        let needs_values = matches!(
            self.operator,
            SelectorOperator::In | SelectorOperator::NotIn
        );
        match (needs_values, self.values.is_empty()) {
            (true, true) => Err(SelectorError::MissingValues {
                key: self.key.clone(),
                operator: self.operator,
            }),
            (false, false) => Err(SelectorError::UnexpectedValues {
                key: self.key.clone(),
                operator: self.operator,
            }),
            _ => Ok(()),
        }
    }
}

impl LabelSelector {
    /// `{}`: matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector with only `matchLabels`.
    pub fn with_labels(pairs: &[(&str, &str)]) -> Self {
        Self {
            match_labels: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Checks what Kubernetes checks before a selector can be used. Matching
    /// never fails: an invalid `In`/`NotIn` without values behaves like the
    /// empty set, and values given to `Exists`/`DoesNotExist` are ignored.
    pub fn validate(&self) -> Result<(), SelectorError> {
        self.match_expressions
            .iter()
            .try_for_each(LabelSelectorRequirement::validate)
    }
}

/// A list of selectors is ORed. The empty list matches nothing here; each
/// caller decides what "no selectors" means (all nodes, all services, or no
/// pools), because MetalLB treats the three lists differently.
pub fn matches_any(selectors: &[LabelSelector], labels: &Labels) -> bool {
    selectors.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::SelectorOperator::*;
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![LabelSelectorRequirement::new(key, operator, values)],
        }
    }

    #[test]
    fn requirement_table() {
        let zone_a = labels(&[("zone", "a")]);
        let zone_b = labels(&[("zone", "b")]);
        let none = labels(&[]);
        #[rustfmt::skip]
        let table: &[(LabelSelector, &Labels, bool)] = &[
            (LabelSelector::everything(), &none, true),
            (LabelSelector::everything(), &zone_a, true),
            (LabelSelector::with_labels(&[("zone", "a")]), &zone_a, true),
            (LabelSelector::with_labels(&[("zone", "a")]), &zone_b, false),
            (LabelSelector::with_labels(&[("zone", "a")]), &none, false),
            (expr("zone", In, &["a", "c"]), &zone_a, true),
            (expr("zone", In, &["c"]), &zone_a, false),
            (expr("zone", In, &["a"]), &none, false),
            (expr("zone", NotIn, &["a"]), &zone_a, false),
            (expr("zone", NotIn, &["a"]), &zone_b, true),
            // Kubernetes: NotIn matches objects that lack the key.
            (expr("zone", NotIn, &["a"]), &none, true),
            (expr("zone", Exists, &[]), &zone_a, true),
            (expr("zone", Exists, &[]), &none, false),
            (expr("zone", DoesNotExist, &[]), &zone_a, false),
            (expr("zone", DoesNotExist, &[]), &none, true),
            (expr("zone", In, &[]), &zone_a, false),
        ];
        for (i, (selector, labels, expected)) in table.iter().enumerate() {
            assert_eq!(
                selector.matches(labels),
                *expected,
                "row {i}: {selector:?} on {labels:?}"
            );
        }
    }

    #[test]
    fn requirements_and_labels_are_anded() {
        let selector = LabelSelector {
            match_labels: labels(&[("zone", "a")]),
            match_expressions: vec![LabelSelectorRequirement::new("role", Exists, &[])],
        };
        assert!(selector.matches(&labels(&[("zone", "a"), ("role", "lb")])));
        assert!(!selector.matches(&labels(&[("zone", "a")])));
        assert!(!selector.matches(&labels(&[("role", "lb")])));
    }

    #[test]
    fn selector_lists_are_ored_and_empty_list_matches_nothing() {
        let list = [
            LabelSelector::with_labels(&[("zone", "a")]),
            LabelSelector::with_labels(&[("zone", "b")]),
        ];
        assert!(matches_any(&list, &labels(&[("zone", "b")])));
        assert!(!matches_any(&list, &labels(&[("zone", "c")])));
        assert!(!matches_any(&[], &labels(&[("zone", "a")])));
        assert!(matches_any(&[LabelSelector::everything()], &labels(&[])));
    }

    #[test]
    fn operators_parse_case_sensitively_and_validate() {
        assert_eq!(SelectorOperator::parse("NotIn"), Ok(NotIn));
        assert_eq!(
            SelectorOperator::parse("notin"),
            Err(SelectorError::UnknownOperator("notin".into()))
        );
        assert!(expr("zone", In, &[]).validate().is_err());
        assert!(expr("zone", Exists, &["a"]).validate().is_err());
        assert!(expr("zone", DoesNotExist, &[]).validate().is_ok());
        assert_eq!(
            expr("zone", NotIn, &[]).validate().unwrap_err().to_string(),
            "label selector requirement on \"zone\": NotIn needs at least one value"
        );
    }
}
