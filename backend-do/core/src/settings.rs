//! The SQLite connection's settings that a rolled-back transaction does not undo.
//!
//! A Durable Object has one SQLite connection for every caller. Some `PRAGMA`s the runtime
//! lets a statement set are flags of that connection, not state of the database: set
//! inside the read-only mode's transaction, they outlive its rollback and change what the
//! next caller's statements do (`ignore_check_constraints = 1` lets a writer store rows
//! that violate a `CHECK`). So the read-only mode reads each setting before and after the
//! statement, sets back every one that changed, and refuses the statement
//! ([`crate::rpc::DbError::ReadOnly`]). This is a comparison of state, like the schema
//! comparison, not a reading of the statement's text: text can be crafted, state cannot.

/// One connection setting: a statement that reads its value as one integer, and the
/// pragma that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The pragma that sets it (`PRAGMA <name> = <value>`).
    pub pragma: &'static str,
    /// A statement answering one row with one integer: the setting's current value.
    pub read: &'static str,
}

/// Every setting a statement can change through the Durable Object SQL API: the boolean
/// pragmas the runtime allows to be assigned (workerd's allowlist in
/// `src/workerd/util/sqlite.c++`; every other assignment, such as `user_version`, is
/// refused with `SQLITE_AUTH`, measured in RUNTIME.md §9). `foreign_keys` cannot change
/// inside a transaction and `defer_foreign_keys` lasts until the enclosing transaction
/// ends, so neither outlives a statement today; they are read anyway, so a change of
/// either rule is still caught.
/// `case_sensitive_like` cannot be read back (`PRAGMA case_sensitive_like` answers no row,
/// measured), so its effect is read instead: `'a' LIKE 'A'` is false exactly when it is on.
pub const SETTINGS: [Setting; 7] = [
    Setting { pragma: "ignore_check_constraints", read: "PRAGMA ignore_check_constraints" },
    Setting { pragma: "recursive_triggers", read: "PRAGMA recursive_triggers" },
    Setting { pragma: "reverse_unordered_selects", read: "PRAGMA reverse_unordered_selects" },
    Setting { pragma: "legacy_alter_table", read: "PRAGMA legacy_alter_table" },
    Setting { pragma: "foreign_keys", read: "PRAGMA foreign_keys" },
    Setting { pragma: "defer_foreign_keys", read: "PRAGMA defer_foreign_keys" },
    Setting { pragma: "case_sensitive_like", read: "SELECT 'a' NOT LIKE 'A'" },
];

/// The value of each of [`SETTINGS`], in order; `None` where it could not be read (a
/// runtime that refuses to read a pragma also refuses to set it).
pub type Snapshot = Vec<Option<i64>>;

/// The statements that set back what changed between `before` and `after`. A setting
/// whose earlier value is unknown cannot be set back (the snapshots still differ, so the
/// statement is still refused).
pub fn restore(before: &[Option<i64>], after: &[Option<i64>]) -> Vec<String> {
    SETTINGS
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| b != a)
        .filter_map(|(s, (b, _))| b.map(|v| format!("PRAGMA {} = {v}", s.pragma)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(v: i64) -> Snapshot {
        vec![Some(v); SETTINGS.len()]
    }

    #[test]
    fn nothing_to_restore_when_nothing_changed() {
        assert!(restore(&all(0), &all(0)).is_empty());
    }

    #[test]
    fn each_changed_setting_is_set_back_to_its_earlier_value() {
        let before = vec![Some(0), Some(0), Some(0), Some(0), Some(1), Some(0), Some(0)];
        let mut after = before.clone();
        after[0] = Some(1);
        after[4] = Some(0);
        after[6] = Some(1);
        assert_eq!(
            restore(&before, &after),
            vec!["PRAGMA ignore_check_constraints = 0", "PRAGMA foreign_keys = 1", "PRAGMA case_sensitive_like = 0"]
        );
    }

    #[test]
    fn a_setting_read_only_once_is_set_back_only_when_its_earlier_value_is_known() {
        let mut after = all(0);
        after[1] = None;
        assert_eq!(restore(&all(0), &after), vec!["PRAGMA recursive_triggers = 0"]);
        assert!(restore(&after, &all(0)).is_empty(), "no earlier value to set back");
    }

    #[test]
    fn every_setting_is_a_plain_pragma_name() {
        for s in SETTINGS {
            assert!(s.pragma.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s:?}");
        }
    }
}
