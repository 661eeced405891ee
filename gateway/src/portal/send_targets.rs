//! What SendTargets lists, per portal group (RFC 7143 appendix C: one
//! `TargetAddress=ADDRESS:PORT,TAG` per portal, the tag naming its portal group). By
//! default a gateway lists its own group's portals (the virtual portal alone when it has
//! one). The operator can say which portals each group lists (`send_targets_set`): the
//! own group's list replaces the default, and other groups (the other gateway processes
//! that export the same LUs, each its own portal group) are listed beside it, so a host
//! that discovers through one process learns every port of the array.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::session::Portal;

/// Portals listed per group tag, as configured.
pub type ListedGroups = BTreeMap<u16, Vec<SocketAddr>>;

/// Most portals one group lists; a SendTargets answer stays a few KiB.
pub const LISTED_PORTALS_PER_GROUP_MAX: usize = 32;
/// Most groups configured.
pub const LISTED_GROUPS_MAX: usize = 16;

/// The portals SendTargets lists: `own` (the default of group `own_group`) unless the
/// configuration lists that group, then every other configured group, by tag.
pub fn listed(own_group: u16, own: Vec<Portal>, configured: &ListedGroups) -> Vec<Portal> {
    let mut portals = match configured.get(&own_group) {
        Some(addrs) => addrs
            .iter()
            .map(|&addr| Portal {
                addr,
                group_tag: own_group,
            })
            .collect(),
        None => own,
    };
    for (&group_tag, addrs) in configured.iter().filter(|(&tag, _)| tag != own_group) {
        portals.extend(addrs.iter().map(|&addr| Portal { addr, group_tag }));
    }
    portals
}

/// Checks one group's configuration: a tag from 1, a bounded list without repeats.
pub fn check(group: u16, portals: &[SocketAddr]) -> Result<(), String> {
    if group == 0 {
        return Err("send_targets_set: group 0 is reserved; use 1 to 65535".into());
    }
    if portals.len() > LISTED_PORTALS_PER_GROUP_MAX {
        return Err(format!(
            "send_targets_set: {} portals for group {group}: at most {LISTED_PORTALS_PER_GROUP_MAX}",
            portals.len()
        ));
    }
    for (at, addr) in portals.iter().enumerate() {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(format!(
                "send_targets_set: portal {addr}: hosts cannot log in there"
            ));
        }
        if portals[..at].contains(addr) {
            return Err(format!("send_targets_set: portal {addr} is given twice"));
        }
    }
    Ok(())
}

/// Sets one group's list in `configured` (an empty list removes the group: the own group
/// is then listed by default again). Refused when it would configure too many groups.
pub fn set(
    configured: &mut ListedGroups,
    group: u16,
    portals: Vec<SocketAddr>,
) -> Result<(), String> {
    check(group, &portals)?;
    if portals.is_empty() {
        configured.remove(&group);
        return Ok(());
    }
    if !configured.contains_key(&group) && configured.len() >= LISTED_GROUPS_MAX {
        return Err(format!(
            "send_targets_set: {LISTED_GROUPS_MAX} groups are configured already"
        ));
    }
    configured.insert(group, portals);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_own_group_defaults_and_other_groups_are_listed_beside_it() {
        let own = vec![Portal {
            addr: addr(1),
            group_tag: 1,
        }];
        assert_eq!(listed(1, own.clone(), &ListedGroups::new()), own);
        let mut configured = ListedGroups::new();
        set(&mut configured, 2, vec![addr(20), addr(21)]).unwrap();
        let all = listed(1, own.clone(), &configured);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], own[0]);
        assert!(all[1..].iter().all(|p| p.group_tag == 2));
        set(&mut configured, 1, vec![addr(10)]).unwrap();
        assert_eq!(listed(1, own.clone(), &configured)[0].addr, addr(10));
        set(&mut configured, 1, Vec::new()).unwrap();
        assert_eq!(listed(1, own.clone(), &configured)[0].addr, addr(1));
        assert!(set(&mut configured, 0, vec![addr(1)])
            .unwrap_err()
            .contains("group 0"));
        assert!(set(&mut configured, 3, vec![addr(1), addr(1)])
            .unwrap_err()
            .contains("twice"));
        assert!(set(&mut configured, 3, vec![addr(0)])
            .unwrap_err()
            .contains("cannot log in"));
    }

    proptest! {
        /// Whatever is set, every group stays bounded and the listing holds exactly the
        /// configured portals of other groups plus the own group's.
        #[test]
        fn listings_stay_bounded_and_complete(
            changes in proptest::collection::vec((1u16..40, proptest::collection::vec(1u16..200, 0..40)), 0..60)
        ) {
            let mut configured = ListedGroups::new();
            for (group, ports) in changes {
                let portals: Vec<SocketAddr> = ports.into_iter().map(addr).collect();
                let before = configured.clone();
                if set(&mut configured, group, portals).is_err() {
                    prop_assert_eq!(&configured, &before);
                }
                prop_assert!(configured.len() <= LISTED_GROUPS_MAX);
                prop_assert!(configured.values().all(|p| !p.is_empty() && p.len() <= LISTED_PORTALS_PER_GROUP_MAX));
            }
            let own = vec![Portal { addr: addr(9999), group_tag: 1 }];
            let all = listed(1, own, &configured);
            let others: usize = configured.iter().filter(|(&t, _)| t != 1).map(|(_, p)| p.len()).sum();
            let own_count = configured.get(&1).map_or(1, Vec::len);
            prop_assert_eq!(all.len(), others + own_count);
        }
    }
}
