//! Users: the people who own credentials and data sources.
//!
//! User names are unique ignoring (ASCII) case, and every lookup ignores
//! case too, resolving to the name as stored: `--user ALICE` is `alice`. A
//! database made before names were compared this way may hold two names
//! that differ only in case; each is still found by its exact spelling.

use redb::{ReadableDatabase, ReadableTable};

use super::model::{User, decode, encode};
use super::{Result, Store, StoreError, USERS, check_name, now_ms};

impl Store {
    /// Adds a user. Names are unique ignoring case: `Alice` is refused when
    /// `alice` exists, since the two are easily confused (a database made
    /// before this rule may hold both; they keep working).
    pub fn add_user(&self, name: &str) -> Result<User> {
        check_name("user name", name)?;
        let txn = self.db().begin_write()?;
        let user = {
            let mut users = txn.open_table(USERS)?;
            for r in users.iter()? {
                let (existing, _) = r?;
                if existing.value().eq_ignore_ascii_case(name) {
                    return Err(StoreError::UserExists(existing.value().to_owned()));
                }
            }
            let user = User {
                name: name.to_owned(),
                created_ms: now_ms(),
            };
            users.insert(name, encode(&user)?.as_slice())?;
            user
        };
        txn.commit()?;
        Ok(user)
    }

    /// The user named `name`, ignoring case (see the module documentation),
    /// if any. The name given exactly wins over one that differs in case;
    /// two that differ from it only in case are ambiguous.
    pub fn user(&self, name: &str) -> Result<Option<User>> {
        let txn = self.db().begin_read()?;
        let users = txn.open_table(USERS)?;
        match resolve(&users, name)? {
            Some(stored) => users
                .get(stored.as_str())?
                .map(|v| decode(v.value(), "user"))
                .transpose(),
            None => Ok(None),
        }
    }

    /// The user named `name` (ignoring case), or an error saying how to
    /// list the users. Use the returned [`User::name`] from then on.
    pub fn require_user(&self, name: &str) -> Result<User> {
        self.user(name)?
            .ok_or_else(|| StoreError::UnknownUser(name.to_owned()))
    }

    /// All users, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let txn = self.db().begin_read()?;
        let users = txn.open_table(USERS)?;
        users
            .iter()?
            .map(|r| {
                let (_, v) = r?;
                decode(v.value(), "user")
            })
            .collect()
    }
}

/// The stored name of the user `name` (ignoring case), if there is one.
fn resolve(
    users: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<String>> {
    if users.get(name)?.is_some() {
        return Ok(Some(name.to_owned()));
    }
    let mut found: Vec<String> = Vec::new();
    for r in users.iter()? {
        let (stored, _) = r?;
        if stored.value().eq_ignore_ascii_case(name) {
            found.push(stored.value().to_owned());
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(StoreError::Ambiguous {
            what: "user",
            given: name.to_owned(),
            matches: found,
        }),
    }
}

/// The stored name of the user `name` (ignoring case) within a write
/// transaction, if there is one.
pub(super) fn resolve_in(txn: &redb::WriteTransaction, name: &str) -> Result<Option<String>> {
    resolve(&txn.open_table(USERS)?, name)
}
