//! Grid search: every combination of every parameter's values, in a stable order.
//!
//! The order is the spec's, the first parameter changing slowest; a parameter with a `when`
//! comes after its parent, and combinations where it is left out count once. Combination `n`
//! is found by walking the combinations in order, so a grid of any size costs nothing until
//! it is walked.

use super::super::space::{Point, SearchSpace};

/// Combination `n` of the grid, or `None` when the grid has fewer.
pub(crate) fn grid_point(space: &SearchSpace, n: u64) -> Option<Point> {
    let mut point: Point = vec![None; space.len()];
    let mut remaining = n;
    walk(space, 0, &mut point, &mut remaining).then_some(point)
}

/// Walks the combinations below `position` (in condition order); true when combination
/// `remaining` was reached, with `point` holding it.
fn walk(space: &SearchSpace, position: usize, point: &mut Point, remaining: &mut u64) -> bool {
    let order = space.condition_order();
    let Some(&i) = order.get(position) else {
        if *remaining == 0 {
            return true;
        }
        *remaining -= 1;
        return false;
    };
    if !space.is_active(i, point) {
        point[i] = None;
        return walk(space, position + 1, point, remaining);
    }
    let domain = &space.parameters()[i].domain;
    let choices = domain.choices().unwrap_or(0);
    for c in 0..choices {
        point[i] = Some(domain.choice_coordinate(c));
        if walk(space, position + 1, point, remaining) {
            return true;
        }
    }
    point[i] = None;
    false
}
