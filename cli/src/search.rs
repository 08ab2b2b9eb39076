//! Listing search: every word of the query must match a word of the listing's name, type,
//! description or parameters (case, hyphens and other punctuation ignored; a query word matches
//! a listing word it equals or begins). Matches are ranked: name before type before parameters
//! before description, whole words before prefixes, the whole query as a phrase of the name first.

use aitbc_protocol::model::Listing;

/// Where a word was found, best first; the weight is what a match there adds to the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Type,
    Parameters,
    Description,
}

impl Field {
    fn weight(self) -> u32 {
        match self {
            Field::Name => 8,
            Field::Type => 6,
            Field::Parameters => 4,
            Field::Description => 2,
        }
    }
}

/// Lower-case words of `text`: runs of letters and digits (`data-processing` is `data`,
/// `processing`).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The score of one query word against one field's words: twice the field's weight for a whole
/// word, the weight for a prefix, 0 when absent.
fn word_score(q: &str, field: Field, ws: &[String]) -> u32 {
    if ws.iter().any(|w| w == q) {
        2 * field.weight()
    } else if ws.iter().any(|w| w.starts_with(q)) {
        field.weight()
    } else {
        0
    }
}

/// The listing's searchable words, per field.
fn fields(l: &Listing) -> [(Field, Vec<String>); 4] {
    let params: Vec<String> = l
        .parameters
        .iter()
        .flat_map(|(k, v)| words(k).into_iter().chain(words(v)))
        .collect();
    [
        (Field::Name, words(&l.name)),
        (Field::Type, words(l.service_type.as_str())),
        (Field::Parameters, params),
        (Field::Description, words(&l.description)),
    ]
}

/// How well `query` matches a listing: `None` unless every query word matches somewhere; an
/// empty query matches everything with score 0.
pub fn score(query: &str, l: &Listing) -> Option<u32> {
    let q = words(query);
    let f = fields(l);
    let mut total = 0;
    for w in &q {
        let best = f
            .iter()
            .map(|(field, ws)| word_score(w, *field, ws))
            .max()
            .unwrap_or(0);
        if best == 0 {
            return None;
        }
        total += best;
    }
    let name = &f[0].1;
    if q.len() > 1 && name.windows(q.len()).any(|win| win == q.as_slice()) {
        total += 100;
    }
    Some(total)
}

/// The listings that match `query`, best first (equal scores keep the chain's order).
pub fn rank(query: &str, listings: Vec<Listing>) -> Vec<Listing> {
    let mut scored: Vec<(u32, Listing)> = listings
        .into_iter()
        .filter_map(|l| score(query, &l).map(|s| (s, l)))
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aitbc_protocol::tx::{Runtime, ServiceType};
    use aitbc_protocol::Amount;

    fn listing(id: &str, name: &str, t: ServiceType, description: &str) -> Listing {
        Listing {
            id: id.into(),
            owner: aitbc_protocol::Keypair::generate().address(),
            name: name.into(),
            service_type: t,
            price: Amount(1),
            description: description.into(),
            parameters: vec![],
            runtime: Runtime::default(),
            active: true,
            created_height: 1,
            bids: 0,
            jobs: 0,
            revenue: Amount::ZERO,
        }
    }

    fn ids(v: &[Listing]) -> Vec<&str> {
        v.iter().map(|l| l.id.as_str()).collect()
    }

    #[test]
    fn words_ignore_case_hyphens_and_punctuation() {
        assert_eq!(
            words("Data-Processing, v2!"),
            vec!["data", "processing", "v2"]
        );
        assert!(words(" - ").is_empty());
    }

    #[test]
    fn the_old_scripts_query_finds_a_data_processing_listing() {
        let l = listing(
            "svc-1",
            "Data Cruncher",
            ServiceType::DataProcessing,
            "Automated data analysis and processing",
        );
        // `marketplace --action search --query "data processing"`, verbatim.
        assert!(score("data processing", &l).is_some());
        assert!(score("DATA-processing", &l).is_some());
        assert!(score("analysis", &l).is_some());
        // Every word must match: one missing word excludes the listing.
        assert_eq!(score("data training", &l), None);
    }

    #[test]
    fn parameters_are_searched_and_prefixes_match() {
        let mut l = listing("svc-1", "Svc", ServiceType::AiInference, "");
        l.parameters = vec![("data_format".into(), "csv,json,xml".into())];
        assert!(score("json", &l).is_some());
        assert!(score("infer", &l).is_some());
        assert_eq!(score("yaml", &l), None);
    }

    #[test]
    fn matches_are_ranked_name_first_then_type_then_description() {
        let v = vec![
            listing(
                "svc-desc",
                "Cruncher",
                ServiceType::GpuRental,
                "data processing on demand",
            ),
            listing("svc-type", "Cruncher 2", ServiceType::DataProcessing, ""),
            listing(
                "svc-none",
                "Trainer",
                ServiceType::AiTraining,
                "fine-tuning",
            ),
            listing(
                "svc-name",
                "Data Processing Pro",
                ServiceType::GpuRental,
                "",
            ),
        ];
        assert_eq!(
            ids(&rank("data processing", v.clone())),
            vec!["svc-name", "svc-type", "svc-desc"]
        );
        // An empty query lists everything in the chain's order.
        assert_eq!(
            ids(&rank("", v)),
            vec!["svc-desc", "svc-type", "svc-none", "svc-name"]
        );
    }
}
