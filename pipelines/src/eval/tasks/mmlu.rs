//! MMLU as lm-eval 0.4.13 renders it (`lm_eval/tasks/mmlu/default/`): one task per subject
//! (`mmlu_<subject>`, the `cais/mmlu` config of that name, its test split), the question and its
//! four lettered choices, the letters as continuations, and a description naming the subject
//! before the few-shot examples (the first `k` docs of the dev split). The four category groups
//! and `mmlu` average their subjects' acc weighted by their docs ([`super::group_aggregate`]).

use std::sync::LazyLock;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value};

use super::{Doc, Output, Sampler, Task, strings, text};

/// lm-eval's MMLU groups of subjects (the `tag` of each subject's YAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    Stem,
    Humanities,
    SocialSciences,
    Other,
}

use Category::{Humanities, Other, SocialSciences, Stem};

impl Category {
    /// The group's name in lm-eval's results.
    pub fn group(self) -> &'static str {
        match self {
            Stem => "mmlu_stem",
            Humanities => "mmlu_humanities",
            SocialSciences => "mmlu_social_sciences",
            Other => "mmlu_other",
        }
    }
}

/// The groups in the order of lm-eval's results table (`mmlu` itself first).
pub const CATEGORIES: [Category; 4] = [Humanities, Other, SocialSciences, Stem];

/// The 57 subjects and their categories, from lm-eval's `mmlu_<subject>.yaml` files.
const SUBJECTS: [(&str, Category); 57] = [
    ("abstract_algebra", Stem), ("anatomy", Stem), ("astronomy", Stem), ("business_ethics", Other), ("clinical_knowledge", Other),
    ("college_biology", Stem), ("college_chemistry", Stem), ("college_computer_science", Stem), ("college_mathematics", Stem),
    ("college_medicine", Other), ("college_physics", Stem), ("computer_security", Stem), ("conceptual_physics", Stem),
    ("econometrics", SocialSciences), ("electrical_engineering", Stem), ("elementary_mathematics", Stem), ("formal_logic", Humanities),
    ("global_facts", Other), ("high_school_biology", Stem), ("high_school_chemistry", Stem), ("high_school_computer_science", Stem),
    ("high_school_european_history", Humanities), ("high_school_geography", SocialSciences),
    ("high_school_government_and_politics", SocialSciences), ("high_school_macroeconomics", SocialSciences),
    ("high_school_mathematics", Stem), ("high_school_microeconomics", SocialSciences), ("high_school_physics", Stem),
    ("high_school_psychology", SocialSciences), ("high_school_statistics", Stem), ("high_school_us_history", Humanities),
    ("high_school_world_history", Humanities), ("human_aging", Other), ("human_sexuality", SocialSciences),
    ("international_law", Humanities), ("jurisprudence", Humanities), ("logical_fallacies", Humanities), ("machine_learning", Stem),
    ("management", Other), ("marketing", Other), ("medical_genetics", Other), ("miscellaneous", Other), ("moral_disputes", Humanities),
    ("moral_scenarios", Humanities), ("nutrition", Other), ("philosophy", Humanities), ("prehistory", Humanities),
    ("professional_accounting", Other), ("professional_law", Humanities), ("professional_medicine", Other),
    ("professional_psychology", SocialSciences), ("public_relations", SocialSciences), ("security_studies", SocialSciences),
    ("sociology", SocialSciences), ("us_foreign_policy", SocialSciences), ("virology", Other), ("world_religions", Humanities),
];

/// MMLU's default number of examples before each question (the paper's 5-shot; lm-eval's own
/// YAML leaves it at 0, so `lm_eval --num_fewshot 5` is the comparison).
pub const DEFAULT_FEWSHOT: usize = 5;

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// One task per subject, built once. Their names and descriptions are made from the subject and
/// leaked (57 short strings, once per process) so that they are `&'static` like the other tasks'.
pub static MMLU: LazyLock<Vec<(Task, Category)>> = LazyLock::new(|| {
    SUBJECTS
        .iter()
        .map(|&(subject, category)| {
            let name: &'static str = Box::leak(format!("mmlu_{subject}").into_boxed_str());
            let description = format!("The following are multiple choice questions (with answers) about {}.\n\n", subject.replace('_', " "));
            let task = Task {
                name,
                dataset: "cais/mmlu",
                config: Some(subject),
                split: "test",
                output: Output::MultipleChoice,
                metrics: &["acc"],
                templates: [
                    ("doc_to_text", "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"),
                    ("doc_to_target", "answer"),
                    ("doc_to_choice", "[\"A\", \"B\", \"C\", \"D\"]"),
                ],
                version: 1.0,
                fewshot_split: Some("dev"),
                training_split: None,
                sampler: Sampler::FirstN,
                description: Box::leak(description.into_boxed_str()),
                render,
            };
            (task, category)
        })
        .collect()
});

/// The subject tasks of `category`, or all of them.
pub fn subjects(category: Option<Category>) -> impl Iterator<Item = &'static Task> {
    MMLU.iter().filter(move |(_, c)| category.is_none_or(|category| *c == category)).map(|(t, _)| t)
}

/// The category of a subject task (`None` for a task that is not an MMLU subject).
pub fn category(task: &Task) -> Option<Category> {
    MMLU.iter().find(|(t, _)| t.name == task.name).map(|&(_, c)| c)
}

/// The groups a command-line name asks for, each with its subject tasks: `mmlu` is itself and
/// its four categories, a category name itself; any other name none.
pub fn groups_named(name: &str) -> Vec<(&'static str, Vec<&'static Task>)> {
    if name == "mmlu" {
        let mut groups = vec![("mmlu", subjects(None).collect())];
        groups.extend(CATEGORIES.iter().map(|c| (c.group(), subjects(Some(*c)).collect())));
        return groups;
    }
    CATEGORIES.iter().filter(|c| c.group() == name).map(|c| (c.group(), subjects(Some(*c)).collect())).collect()
}

/// A group's direct subtasks for lm-eval's `group_subtasks`: `mmlu`'s are its categories.
pub fn group_subtasks(group: &str) -> Vec<&'static str> {
    match group {
        "mmlu" => CATEGORIES.iter().map(|c| c.group()).collect(),
        other => CATEGORIES.iter().filter(|c| c.group() == other).flat_map(|c| subjects(Some(*c)).map(|t| t.name)).collect(),
    }
}

/// `{question.strip()}\nA. …\nD. …\nAnswer:`, the letters as choices, gold = `answer` (0–3).
fn render(doc: &Map<String, Value>) -> Result<Doc> {
    let choices = strings(doc.get("choices"), "choices")?;
    ensure!(choices.len() == 4, "`choices` holds {} choices, not 4", choices.len());
    let question = text(doc, "question")?.trim_matches(super::is_python_space);
    let mut prompt = question.to_string();
    for (letter, choice) in LETTERS.iter().zip(&choices) {
        prompt.push_str(&format!("\n{letter}. {choice}"));
    }
    prompt.push_str("\nAnswer:");
    Doc::choices(prompt, LETTERS.map(str::to_string).to_vec(), answer(doc)?)
}

/// `answer`: the gold index (an integer in `cais/mmlu`; a string in a CSV copy).
fn answer(doc: &Map<String, Value>) -> Result<usize> {
    let index = match doc.get("answer") {
        Some(Value::Number(n)) => n.as_u64().with_context(|| format!("`answer` is {n}, not 0–3"))? as usize,
        Some(Value::String(s)) => s.trim().parse().with_context(|| format!("`answer` is {s:?}, not 0–3"))?,
        Some(other) => bail!("`answer` is {other}, not 0–3"),
        None => bail!("no `answer` field"),
    };
    ensure!(index < LETTERS.len(), "`answer` is {index}, not 0–3");
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_is_a_task_with_its_description() {
        assert_eq!(MMLU.len(), 57);
        assert_eq!(subjects(Some(Stem)).count() + subjects(Some(Humanities)).count() + subjects(Some(SocialSciences)).count() + subjects(Some(Other)).count(), 57);
        let task = &MMLU[1].0;
        assert_eq!((task.name, task.description), ("mmlu_anatomy", "The following are multiple choice questions (with answers) about anatomy.\n\n"));
        assert_eq!(category(task), Some(Stem));
    }
}
