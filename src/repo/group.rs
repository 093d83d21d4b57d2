//! The group hierarchy: which groups contain which (transitively), computed once at load so
//! that resolving a thousand nodes is a table lookup per group, and loops are found up front.

use std::collections::HashMap;

use crate::diag::Diagnostic;
use crate::repo::toml_file::Located;

/// What the hierarchy needs of a group as written: its name and its subgroups.
pub(crate) struct Edges<'a> {
    pub name: &'a str,
    pub subgroups: &'a [Located<String>],
}

/// Supergroup relations between all groups of a repo, by index into the loader's group list.
pub(crate) struct Hierarchy {
    names: Vec<String>,
    /// `ancestors[g][a]`: group `a` is a (transitive) supergroup of `g`.
    ancestors: Vec<Vec<bool>>,
    depth: Vec<usize>,
}

impl Hierarchy {
    /// Builds the relation; every subgroup loop is reported once, with its full path.
    pub fn build(
        groups: &[Edges<'_>],
        index: &HashMap<&str, usize>,
        diags: &mut Vec<Diagnostic>,
    ) -> Hierarchy {
        let n = groups.len();
        let children: Vec<Vec<(usize, usize)>> = groups
            .iter()
            .map(|g| {
                g.subgroups
                    .iter()
                    .enumerate()
                    .filter_map(|(pos, s)| index.get(s.value.as_str()).map(|&c| (c, pos)))
                    .collect()
            })
            .collect();
        report_loops(groups, &children, diags);

        let mut parents = vec![Vec::new(); n];
        for (g, kids) in children.iter().enumerate() {
            for &(c, _) in kids {
                parents[c].push(g);
            }
        }
        let mut ancestors = vec![vec![false; n]; n];
        for (g, row) in ancestors.iter_mut().enumerate() {
            let mut stack: Vec<usize> = parents[g].clone();
            while let Some(p) = stack.pop() {
                if !row[p] {
                    row[p] = true;
                    stack.extend(&parents[p]);
                }
            }
        }
        // In a loop-free hierarchy a supergroup always has strictly fewer ancestors than its
        // subgroups, so the ancestor count orders supergroups first.
        let depth = ancestors
            .iter()
            .map(|row| row.iter().filter(|&&a| a).count())
            .collect();
        Hierarchy {
            names: groups.iter().map(|g| g.name.to_string()).collect(),
            ancestors,
            depth,
        }
    }

    /// Whether `a` is a supergroup (at any distance) of `b`.
    pub fn is_ancestor(&self, a: usize, b: usize) -> bool {
        self.ancestors[b][a]
    }

    /// Sort key putting supergroups before their subgroups.
    pub fn depth(&self, g: usize) -> usize {
        self.depth[g]
    }

    /// The given groups plus all their supergroups, sorted and deduplicated.
    pub fn closure(&self, groups: &[usize]) -> Vec<usize> {
        let mut member = vec![false; self.names.len()];
        for &g in groups {
            member[g] = true;
            for (a, &is) in self.ancestors[g].iter().enumerate() {
                if is {
                    member[a] = true;
                }
            }
        }
        member
            .iter()
            .enumerate()
            .filter_map(|(g, &m)| m.then_some(g))
            .collect()
    }

    /// Names of all supergroups of `g`, sorted.
    pub fn ancestor_names(&self, g: usize) -> Vec<String> {
        let mut names: Vec<String> = self.ancestors[g]
            .iter()
            .enumerate()
            .filter(|&(a, &is)| is && a != g)
            .map(|(a, _)| self.names[a].clone())
            .collect();
        names.sort();
        names
    }
}

/// Depth-first search over subgroup edges; each back edge closes one loop.
fn report_loops(
    groups: &[Edges<'_>],
    children: &[Vec<(usize, usize)>],
    diags: &mut Vec<Diagnostic>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = groups.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Explicit stack of (group, next child position) so deep hierarchies cannot overflow.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some(&mut (g, ref mut next)) = path.last_mut() {
            if let Some(&(c, pos)) = children[g].get(*next) {
                *next += 1;
                match mark[c] {
                    Mark::New => {
                        mark[c] = Mark::Active;
                        path.push((c, 0));
                    }
                    Mark::Active => {
                        let from = path.iter().position(|&(x, _)| x == c).unwrap_or(0);
                        let mut names: Vec<&str> =
                            path[from..].iter().map(|&(x, _)| groups[x].name).collect();
                        names.push(groups[c].name);
                        diags.push(
                            Diagnostic::at(
                                groups[g].subgroups[pos].location.clone(),
                                format!("subgroup loop: {}", names.join(" -> ")),
                            )
                            .with_hint(format!(
                                "remove '{}' from the subgroups of '{}'",
                                groups[c].name, groups[g].name
                            )),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                mark[g] = Mark::Done;
                path.pop();
            }
        }
    }
}
