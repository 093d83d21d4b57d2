//! The dependency graph of one node's items: pure, so `cinch test` and `cinch items` use it
//! without a network.
