//! Endpoints and the traffic split between their served models.

use std::sync::Arc;

use crate::config::EndpointConfig;
use crate::metrics::EndpointMetrics;
use crate::registry::{LoadedModel, Registry};
use crate::runtime::RuntimeError;

/// A served model of an endpoint: a name, the model version behind it, and its metrics.
#[derive(Debug)]
pub struct ServedModel {
    pub name: Arc<str>,
    pub model: Arc<LoadedModel>,
    pub metrics: EndpointMetrics,
}

/// An endpoint ready to route: served models with cumulative traffic percentages.
#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub served: Vec<ServedModel>,
    /// `cumulative[i]` = sum of the percentages of served[0..=i]; the last is 100.
    cumulative: Vec<u32>,
}

impl Endpoint {
    /// Resolves an endpoint config against loaded models.
    pub fn build(cfg: &EndpointConfig, registry: &Registry) -> Result<Endpoint, RuntimeError> {
        let mut served = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0;
        for route in &cfg.routes {
            let Some(entity) = cfg.served_entities.iter().find(|s| s.name == route.served_model_name) else {
                continue;
            };
            let model = registry.get_version(&entity.model, entity.version).ok_or_else(|| RuntimeError::Load {
                model: entity.model.clone(),
                version: entity.version,
                message: format!("endpoint '{}' serves it but it is not loaded", cfg.name),
            })?;
            total += route.traffic_percentage;
            served.push(ServedModel {
                name: Arc::from(entity.name.as_str()),
                model: model.clone(),
                metrics: EndpointMetrics::new(&cfg.name, &entity.name),
            });
            cumulative.push(total);
        }
        Ok(Endpoint { name: cfg.name.clone(), served, cumulative })
    }

    /// Picks a served model by weighted random choice.
    pub fn pick(&self) -> &ServedModel {
        let i = if self.served.len() == 1 { 0 } else { pick_index(&self.cumulative, rand::random::<f64>()) };
        &self.served[i.min(self.served.len().saturating_sub(1))]
    }
}

/// Index of the bucket that `u` in [0, 1) falls into, given cumulative percentages.
pub fn pick_index(cumulative: &[u32], u: f64) -> usize {
    let point = u * 100.0;
    cumulative.iter().position(|&c| point < f64::from(c)).unwrap_or(cumulative.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::pick_index;

    #[test]
    fn buckets_follow_cumulative_weights() {
        let c = [90, 100];
        assert_eq!(pick_index(&c, 0.0), 0);
        assert_eq!(pick_index(&c, 0.899), 0);
        assert_eq!(pick_index(&c, 0.9), 1);
        assert_eq!(pick_index(&c, 0.999_999), 1);
        // a zero-weight route is never picked
        let z = [0, 100];
        assert_eq!(pick_index(&z, 0.0), 1);
    }
}
