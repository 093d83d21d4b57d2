//! Rhai hooks: user scripts called at every lifecycle point (SPEC section 6).
