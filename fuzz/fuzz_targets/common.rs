//! Shared by the model-running targets: the synthetic model, loaded once per process.

use lmzip::model::Model;
use std::sync::OnceLock;

pub fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| lmzip::testing::synthetic_model().expect("synthetic model loads"))
}
