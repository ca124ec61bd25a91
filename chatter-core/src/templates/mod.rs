//! Templates: parameterised blueprints that generate a [`WorkflowDefinition`] in memory
//! (DESIGN §7).
//!
//! A [`TemplateSpec`] carries its metadata (`name`, `category`, `default_params`,
//! `required_tools`, `required_retrievers`, `tags`, `version`, ...), a parameter schema, and a
//! generator:
//!
//! * [`Generator::UniversalChat`]: the old platform's universal-chat graph (memory, retrieval and
//!   tools switched by parameters), with conditions that really read the capabilities it sets;
//! * [`Generator::CapabilityBased`]: start → memory (when enabled) → retrieval (when the template
//!   requires retrievers) → llm ⇄ tools (`has_tool_calls` / `no_tool_calls` and the
//!   `max_tool_calls` limit) → end;
//! * [`Generator::Graph`]: a graph carried by the template itself, whose strings may hold
//!   `{{ params.x }}` placeholders. Only expressions that read nothing but `params` are rendered
//!   at generation time; run-time templates such as `{{ variables.topic }}` are left for the
//!   engine.
//!
//! Generating never writes anything: the definition lives in memory for one execution.
//!
//! On top of any [`crate::store::Store`] (store-agnostic, see `docs/templates.md`):
//!
//! * [`seed_builtins`] stores the twelve built-ins (idempotent; read-only for users);
//! * [`lifecycle`]: create, update (version history), delete, export / import (the old export
//!   format, `export_version` 1.0), [`validate_template`] (issues, never an error), fork, and the
//!   access rules (built-ins and public templates readable by all, own templates changeable);
//! * [`run_template`] executes a stored ([`TemplateRef::Stored`]) or inline template: the graph
//!   is generated in memory and run through the [`crate::tracker::WorkflowTracker`]; the
//!   execution row records the template id and the merged parameters, and no definition row is
//!   written;
//! * [`marketplace`]: publishing templates as marketplace listings and installing them.
//!
//! ```
//! use chatter_core::templates::{builtin_templates, TemplateSpec};
//! use serde_json::json;
//!
//! let templates = builtin_templates();
//! assert_eq!(templates.len(), 12);
//! let qa = templates.iter().find(|t| t.name == "document_qa").expect("built-in");
//! let params = qa.merge_params(&json!({"max_documents": 3}))?;
//! let def = qa.generate(&params)?;
//! assert!(def.node("retrieval").is_some());
//! assert_eq!(def.node("retrieval").expect("node").config["top_k"], 3);
//! # Ok::<(), chatter_core::Error>(())
//! ```

mod execute;
mod generate;
pub mod lifecycle;
pub mod marketplace;
mod params;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::WorkflowDefinition;
use crate::error::{Error, Result};

pub use execute::{
    PreparedTemplate, TemplateRef, prepare_template, run_template, run_template_observed,
};
pub use lifecycle::{
    EXPORT_VERSION, ImportOptions, SeedReport, TemplateValidation, create_template,
    delete_template, export_template, fork_template, get_visible, import_template, list_visible,
    resolve, seed_builtins, spec_of, template_versions, update_template, validate_template,
};
pub use marketplace::{install_listing, publish_template, publish_version, snapshot_of};
pub use params::standard_parameter_schema;

/// The categories of DESIGN §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TemplateCategory {
    /// General conversation.
    General,
    /// Customer support.
    CustomerSupport,
    /// Programming.
    Programming,
    /// Research.
    Research,
    /// Data analysis.
    DataAnalysis,
    /// Creative writing.
    Creative,
    /// Education.
    Educational,
    /// Business.
    Business,
    /// Anything else.
    #[default]
    Custom,
}

impl TemplateCategory {
    /// Every category, in the order of DESIGN §7.
    pub const ALL: [TemplateCategory; 9] = [
        TemplateCategory::General,
        TemplateCategory::CustomerSupport,
        TemplateCategory::Programming,
        TemplateCategory::Research,
        TemplateCategory::DataAnalysis,
        TemplateCategory::Creative,
        TemplateCategory::Educational,
        TemplateCategory::Business,
        TemplateCategory::Custom,
    ];

    /// The snake_case name (`customer_support`).
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateCategory::General => "general",
            TemplateCategory::CustomerSupport => "customer_support",
            TemplateCategory::Programming => "programming",
            TemplateCategory::Research => "research",
            TemplateCategory::DataAnalysis => "data_analysis",
            TemplateCategory::Creative => "creative",
            TemplateCategory::Educational => "educational",
            TemplateCategory::Business => "business",
            TemplateCategory::Custom => "custom",
        }
    }

    /// The category with this name.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] naming the allowed categories.
    pub fn parse(name: &str) -> Result<TemplateCategory> {
        TemplateCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| Error::Template {
                message: format!(
                    "unknown category `{name}`; expected one of {}",
                    TemplateCategory::ALL
                        .map(TemplateCategory::as_str)
                        .join(", ")
                ),
            })
    }
}

/// Which graph a template generates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Generator {
    /// The universal-chat graph.
    UniversalChat,
    /// start → memory → retrieval → llm ⇄ tools → end, by capabilities.
    CapabilityBased,
    /// A graph carried by the template (`{nodes, edges}` with `{{ params.x }}` placeholders).
    Graph {
        /// The graph, in either definition shape.
        graph: Value,
    },
}

/// A template: metadata, default parameters, a parameter schema and a generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// Unique name.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Category.
    #[serde(default)]
    pub category: TemplateCategory,
    /// The old platform's workflow type (`universal_chat`, `simple_chat`, `rag_chat`,
    /// `function_chat`, `advanced_chat`, `custom`).
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// Parameters used when an execution gives none.
    #[serde(default)]
    pub default_params: Map<String, Value>,
    /// Tools the generated graph binds.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub required_tools: Vec<String>,
    /// Retrievers the generated graph queries.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub required_retrievers: Vec<String>,
    /// Tags.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    /// Readable by every user.
    #[serde(default)]
    pub is_public: bool,
    /// Shipped with Chatter (seeded, read-only for users).
    #[serde(default)]
    pub is_builtin: bool,
    /// Version number, from 1.
    #[serde(default = "one")]
    pub version: u32,
    /// The template this one was forked or installed from.
    #[serde(default)]
    pub base_template_id: Option<String>,
    /// JSON Schema of the parameters (types, ranges, enums, required); `None` means the standard
    /// chat parameters ([`standard_parameter_schema`]).
    #[serde(default)]
    pub parameter_schema: Option<Value>,
    /// The generator; `None` chooses by `workflow_type` (universal chat for `universal_chat`,
    /// capability-based otherwise).
    #[serde(default)]
    pub generator: Option<Generator>,
}

fn one() -> u32 {
    1
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl TemplateSpec {
    /// Reads a template from JSON (the old export's `template` object, or this type's own shape).
    ///
    /// # Errors
    ///
    /// [`Error::Template`] naming what is missing or of the wrong type.
    pub fn from_value(value: &Value) -> Result<TemplateSpec> {
        let spec: TemplateSpec =
            serde_json::from_value(value.clone()).map_err(|e| Error::Template {
                message: format!("not a template: {e}"),
            })?;
        if spec.name.trim().is_empty() {
            return Err(Error::Template {
                message: "a template needs a non-empty `name`".into(),
            });
        }
        if let Some(Generator::Graph { graph }) = &spec.generator
            && !graph.is_object()
        {
            {
                return Err(Error::Template {
                    message:
                        "a graph template's `graph` must be an object with `nodes` and `edges`"
                            .into(),
                });
            }
        }
        Ok(spec)
    }

    /// The generator in force.
    pub fn generator(&self) -> Generator {
        match &self.generator {
            Some(generator) => generator.clone(),
            None if self.workflow_type.as_deref() == Some("universal_chat")
                || self.name == "universal_chat" =>
            {
                Generator::UniversalChat
            }
            None => Generator::CapabilityBased,
        }
    }

    /// The parameter schema in force.
    pub fn parameter_schema(&self) -> Value {
        self.parameter_schema
            .clone()
            .unwrap_or_else(standard_parameter_schema)
    }

    /// The default parameters overlaid with `given` (an object; `null` means none), checked
    /// against the parameter schema.
    ///
    /// # Errors
    ///
    /// [`Error::Template`] listing every parameter of the wrong type, out of range, not allowed,
    /// unknown or missing.
    pub fn merge_params(&self, given: &Value) -> Result<Map<String, Value>> {
        let mut merged = self.default_params.clone();
        match given {
            Value::Null => {}
            Value::Object(map) => {
                for (k, v) in map {
                    merged.insert(k.clone(), v.clone());
                }
            }
            other => {
                return Err(Error::Template {
                    message: format!(
                        "template `{}`: parameters must be an object, found {}",
                        self.name,
                        crate::definition::json_type_name(other)
                    ),
                });
            }
        }
        let problems = params::check(&self.parameter_schema(), &merged);
        if problems.is_empty() {
            Ok(merged)
        } else {
            Err(Error::Template {
                message: format!(
                    "template `{}`: invalid parameters: {}",
                    self.name,
                    problems.join("; ")
                ),
            })
        }
    }

    /// Generates the definition for already merged parameters (see [`TemplateSpec::merge_params`]).
    ///
    /// # Errors
    ///
    /// [`Error::Template`] when a graph template's placeholders fail to render, or its graph is
    /// not a definition.
    pub fn generate(&self, params: &Map<String, Value>) -> Result<WorkflowDefinition> {
        let value = match self.generator() {
            Generator::UniversalChat => generate::universal_chat(self, params),
            Generator::CapabilityBased => generate::capability_based(self, params),
            Generator::Graph { graph } => generate::graph(&graph, params)?,
        };
        WorkflowDefinition::from_value(&value).map_err(|e| Error::Template {
            message: format!(
                "template `{}` generated an unreadable definition: {e}",
                self.name
            ),
        })
    }

    /// SHA-256 (hex) of the template's configuration as canonical JSON (keys sorted, no
    /// whitespace): everything but the name, description, version, flags and lineage, so two
    /// templates that generate the same graphs hash the same.
    pub fn config_hash(&self) -> String {
        let config = serde_json::json!({
            "workflow_type": self.workflow_type,
            "default_params": self.default_params,
            "required_tools": self.required_tools,
            "required_retrievers": self.required_retrievers,
            "parameter_schema": self.parameter_schema,
            "generator": self.generator,
        });
        sha256_hex(canonical_json(&config).as_bytes())
    }
}

/// JSON with object keys sorted and no insignificant whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value)).unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The twelve built-in templates of the old platform (`is_builtin`, public), in its order.
pub fn builtin_templates() -> Vec<TemplateSpec> {
    #[derive(Deserialize)]
    struct Builtins {
        templates: Vec<TemplateSpec>,
    }
    // The file is part of the crate and checked by the tests; an unreadable one is a build bug.
    let parsed: Result<Builtins, _> = serde_json::from_str(include_str!("builtin.json"));
    parsed
        .map(|b| b.templates)
        .unwrap_or_default()
        .into_iter()
        .map(|mut t| {
            t.is_builtin = true;
            t.is_public = true;
            if t.tags.is_empty() {
                t.tags = vec![t.category.as_str().to_owned()];
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests;
