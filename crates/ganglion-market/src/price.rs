//! Price: a sealed-bid reverse auction with a uniform price.
//!
//! Each eligible offer's asked price is a standing bid. The k cheapest eligible bids win (subject
//! to failure domains), and every winner is paid the same price per answer: the first losing
//! bid, that is the first eligible bid after the last winner in bid order (the (k+1)-th lowest
//! when no failure-domain rule skipped anyone), never below a winning bid, capped by the robot's
//! maximum price. If no eligible bid lost, the price is the robot's maximum (its reserve price).
//!
//! With failure domains, a cheaper offer can lose because it shares a site with a winner; the
//! property below is exact for the auction without domains and approximate with them.
//!
//! Why: a winner's payment does not depend on its own bid, only on whether it wins. Bidding
//! above one's true cost can only turn a profitable win into a loss of the session; bidding
//! below can only add wins paid below cost. So asking one's true cost is the best strategy
//! (this is Vickrey's argument for k identical items with unit demand). `tests` checks the
//! property by brute force over random markets.

use ganglion_types::MicroTokens;

/// The uniform price per answer paid to every winner.
pub fn clearing_price(
    first_losing_bid: Option<MicroTokens>,
    max_price: MicroTokens,
) -> MicroTokens {
    first_losing_bid.map_or(max_price, |bid| bid.min(max_price))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs the auction on plain bids (no failure domains): winners are the k cheapest at or
    /// below the reserve, ties broken by index; returns each bidder's payment if it wins.
    fn auction(bids: &[u64], k: usize, reserve: u64) -> Vec<Option<u64>> {
        let mut order: Vec<usize> = (0..bids.len()).filter(|&i| bids[i] <= reserve).collect();
        order.sort_by_key(|&i| (bids[i], i));
        let loser = order.get(k).map(|&i| MicroTokens(bids[i]));
        let price = clearing_price(loser, MicroTokens(reserve)).0;
        let mut paid = vec![None; bids.len()];
        for &i in order.iter().take(k) {
            paid[i] = Some(price);
        }
        paid
    }

    fn utility(paid: Option<u64>, cost: u64) -> i128 {
        paid.map_or(0, |p| i128::from(p) - i128::from(cost))
    }

    proptest! {
        /// No bidder ever gains by bidding anything but its true cost.
        #[test]
        fn truthful_bidding_is_a_dominant_strategy(
            costs in prop::collection::vec(1u64..1_000, 1..8),
            k in 1usize..4,
            reserve in 1u64..1_200,
            deviation in 0u64..1_200,
            who in 0usize..8,
        ) {
            let who = who % costs.len();
            let truthful = utility(auction(&costs, k, reserve)[who], costs[who]);
            let mut lying = costs.clone();
            lying[who] = deviation;
            let deviated = utility(auction(&lying, k, reserve)[who], costs[who]);
            prop_assert!(deviated <= truthful, "cost {} bid {} gains {} > {}", costs[who], deviation, deviated, truthful);
        }
    }

    #[test]
    fn price_is_the_first_losing_bid_capped_by_the_reserve() {
        assert_eq!(
            auction(&[10, 30, 20, 40], 2, 100),
            vec![Some(30), None, Some(30), None]
        );
        assert_eq!(auction(&[10, 30, 20], 3, 100), vec![Some(100); 3]);
        assert_eq!(
            auction(&[10, 300, 20], 2, 100),
            vec![Some(100), None, Some(100)]
        );
    }
}
