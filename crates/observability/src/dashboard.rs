//! The CloudWatch dashboard, as typed widgets serialized with serde into the dashboard body
//! format (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/CloudWatch-Dashboard-Body-Structure.html>).
//! No string templates: [`build`] assembles [`Dashboard`] values and `serde_json` writes them.

use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::ObservabilityInputs;
use crate::config::ObservabilitySpec;

/// The ECS service metrics namespace.
pub const ECS_NAMESPACE: &str = "AWS/ECS";
/// The Container Insights namespace (running and desired task counts).
pub const CONTAINER_INSIGHTS_NAMESPACE: &str = "ECS/ContainerInsights";
/// The Application Load Balancer metrics namespace.
pub const ALB_NAMESPACE: &str = "AWS/ApplicationELB";

/// A whole dashboard body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dashboard {
    /// The widgets, placed on a 24-column grid.
    pub widgets: Vec<Widget>,
}

/// One widget and its place on the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    /// What it shows (`type` and `properties` in the body).
    #[serde(flatten)]
    pub body: WidgetBody,
    /// Column, 0 to 23.
    pub x: u32,
    /// Row.
    pub y: u32,
    /// Width in columns, 1 to 24.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
}

/// The kinds of widget used here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "properties", rename_all = "lowercase")]
pub enum WidgetBody {
    /// A graph or number of metrics.
    Metric(MetricWidget),
    /// Markdown text.
    Text(TextWidget),
}

/// The properties of a metric widget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricWidget {
    /// The metrics, one line each.
    pub metrics: Vec<MetricLine>,
    /// How they are drawn.
    pub view: View,
    /// Whether lines are stacked.
    pub stacked: bool,
    /// The default statistic of every line (`Average`, `Sum`, `p99`, ...).
    pub stat: String,
    /// The default period, in seconds.
    pub period: u32,
    /// The region of the metrics.
    pub region: String,
    /// The title.
    pub title: String,
    /// Axis ranges and labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y_axis: Option<YAxes>,
}

/// How a metric widget is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum View {
    /// A graph over time.
    TimeSeries,
    /// The latest value as a number.
    SingleValue,
}

/// The left and right vertical axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YAxes {
    /// The left axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<Axis>,
    /// The right axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<Axis>,
}

/// One vertical axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Axis {
    /// The lowest value shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The highest value shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// The axis label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether units are shown.
    pub show_units: bool,
}

/// Which axis a line is drawn against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The left axis (the default).
    Left,
    /// The right axis.
    Right,
}

/// One metric line: in the body an array
/// `[namespace, metric name, dimension name, dimension value, ..., {options}]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Vec<serde_json::Value>")]
pub struct MetricLine {
    /// The namespace (`AWS/ApplicationELB`).
    pub namespace: String,
    /// The metric name (`RequestCount`).
    pub name: String,
    /// The dimensions, in order.
    pub dimensions: Vec<(String, String)>,
    /// Per-line options.
    pub options: LineOptions,
}

/// The options object that ends a metric line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineOptions {
    /// The statistic of this line, overriding the widget's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stat: Option<String>,
    /// The legend label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The axis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y_axis: Option<Side>,
}

impl Serialize for MetricLine {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(3 + 2 * self.dimensions.len()))?;
        seq.serialize_element(&self.namespace)?;
        seq.serialize_element(&self.name)?;
        for (name, value) in &self.dimensions {
            seq.serialize_element(name)?;
            seq.serialize_element(value)?;
        }
        seq.serialize_element(&self.options)?;
        seq.end()
    }
}

impl From<Vec<serde_json::Value>> for MetricLine {
    /// Reads a line back; elements that do not fit the shape are dropped (the body is
    /// compared as JSON values for drift, so this is only a convenience for readers).
    fn from(items: Vec<serde_json::Value>) -> Self {
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (strings, options): (Vec<_>, Vec<_>) = items.iter().partition(|v| !v.is_object());
        let dimensions = strings
            .get(2..)
            .unwrap_or_default()
            .chunks(2)
            .map(|pair| (text(pair.first().copied()), text(pair.get(1).copied())))
            .collect();
        MetricLine {
            namespace: text(strings.first().copied()),
            name: text(strings.get(1).copied()),
            dimensions,
            options: options
                .first()
                .and_then(|o| serde_json::from_value((*o).clone()).ok())
                .unwrap_or_default(),
        }
    }
}

impl MetricLine {
    /// A line with no options.
    pub fn new(namespace: &str, name: &str, dimensions: &[(&str, &str)]) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            dimensions: dimensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            options: LineOptions::default(),
        }
    }

    /// Sets the statistic.
    pub fn stat(mut self, stat: &str) -> Self {
        self.options.stat = Some(stat.to_owned());
        self
    }

    /// Sets the label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.options.label = Some(label.into());
        self
    }

    /// Draws the line against the right axis.
    pub fn right(mut self) -> Self {
        self.options.y_axis = Some(Side::Right);
        self
    }

    /// The value of dimension `name`, when the line has it.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The properties of a text widget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextWidget {
    /// Markdown.
    pub markdown: String,
}

impl Dashboard {
    /// The body as CloudWatch wants it.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The metric widgets with their titles.
    pub fn metric_widgets(&self) -> impl Iterator<Item = &MetricWidget> {
        self.widgets.iter().filter_map(|w| match &w.body {
            WidgetBody::Metric(m) => Some(m),
            WidgetBody::Text(_) => None,
        })
    }
}

/// Places widgets left to right, two per row of 12 columns (full width when alone).
struct Grid {
    widgets: Vec<Widget>,
    y: u32,
}

const HALF: u32 = 12;
const FULL: u32 = 24;
const HEIGHT: u32 = 6;

impl Grid {
    fn text(&mut self, markdown: String) {
        self.widgets.push(Widget {
            body: WidgetBody::Text(TextWidget { markdown }),
            x: 0,
            y: self.y,
            width: FULL,
            height: 2,
        });
        self.y += 2;
    }

    fn row(&mut self, widgets: Vec<MetricWidget>) {
        let width = if widgets.len() == 1 { FULL } else { HALF };
        for (i, m) in widgets.into_iter().enumerate() {
            self.widgets.push(Widget {
                body: WidgetBody::Metric(m),
                x: width * i as u32,
                y: self.y,
                width,
                height: HEIGHT,
            });
        }
        self.y += HEIGHT;
    }
}

/// The dashboard of a stack: service CPU, memory and tasks; load balancer requests, status
/// codes and latency; healthy and unhealthy hosts per zone; the availability check.
pub fn build(
    stack: &str,
    region: &str,
    spec: &ObservabilitySpec,
    inputs: &ObservabilityInputs,
) -> Dashboard {
    let w = Widgets { spec, region };
    let mut grid = Grid {
        widgets: Vec::new(),
        y: 0,
    };
    grid.text(format!(
        "# Stack {stack}\nService `{}` in cluster `{}` behind load balancer `{}`, zones {}. Alarms are named `{stack}-*`.",
        inputs.service_name,
        inputs.cluster_name,
        inputs.load_balancer_arn_suffix,
        inputs.zones.join(", ")
    ));
    service_row(&w, &mut grid, inputs);
    load_balancer_row(&w, &mut grid, inputs);
    hosts_row(&w, &mut grid, stack, inputs);
    Dashboard {
        widgets: grid.widgets,
    }
}

/// What every metric widget of the dashboard shares: the period and the region.
struct Widgets<'a> {
    spec: &'a ObservabilitySpec,
    region: &'a str,
}

impl Widgets<'_> {
    fn widget(
        &self,
        title: &str,
        stat: &str,
        metrics: Vec<MetricLine>,
        y_axis: Option<YAxes>,
    ) -> MetricWidget {
        MetricWidget {
            metrics,
            view: View::TimeSeries,
            stacked: false,
            stat: stat.to_owned(),
            period: self.spec.period_seconds,
            region: self.region.to_owned(),
            title: title.to_owned(),
            y_axis,
        }
    }
}

fn axis(min: Option<u32>, max: Option<u32>, label: &str) -> Axis {
    Axis {
        min,
        max,
        label: Some(label.to_owned()),
        show_units: false,
    }
}

fn left(a: Axis) -> Option<YAxes> {
    Some(YAxes {
        left: Some(a),
        right: None,
    })
}

/// The service's CPU and memory, and its running and desired tasks.
fn service_row(w: &Widgets<'_>, grid: &mut Grid, inputs: &ObservabilityInputs) {
    let service = [
        ("ClusterName", inputs.cluster_name.as_str()),
        ("ServiceName", inputs.service_name.as_str()),
    ];
    grid.row(vec![
        w.widget(
            "ECS CPU and memory utilization",
            "Average",
            vec![
                MetricLine::new(ECS_NAMESPACE, "CPUUtilization", &service).label("CPU %"),
                MetricLine::new(ECS_NAMESPACE, "MemoryUtilization", &service).label("memory %"),
            ],
            left(axis(Some(0), Some(100), "%")),
        ),
        w.widget(
            "Running tasks",
            "Average",
            vec![
                MetricLine::new(CONTAINER_INSIGHTS_NAMESPACE, "RunningTaskCount", &service)
                    .label("running"),
                MetricLine::new(CONTAINER_INSIGHTS_NAMESPACE, "DesiredTaskCount", &service)
                    .label("desired"),
            ],
            left(axis(Some(0), None, "tasks")),
        ),
    ]);
}

/// The load balancer's requests and status codes, and the targets' response time.
fn load_balancer_row(w: &Widgets<'_>, grid: &mut Grid, inputs: &ObservabilityInputs) {
    let lb = [("LoadBalancer", inputs.load_balancer_arn_suffix.as_str())];
    let codes = [
        ("RequestCount", "requests"),
        ("HTTPCode_Target_2XX_Count", "target 2xx"),
        ("HTTPCode_Target_4XX_Count", "target 4xx"),
        ("HTTPCode_Target_5XX_Count", "target 5xx"),
        ("HTTPCode_ELB_5XX_Count", "load balancer 5xx"),
    ];
    grid.row(vec![
        w.widget(
            "Load balancer requests and status codes",
            "Sum",
            codes
                .iter()
                .map(|(name, label)| MetricLine::new(ALB_NAMESPACE, name, &lb).label(*label))
                .collect(),
            left(axis(Some(0), None, "requests")),
        ),
        w.widget(
            "Target response time",
            "p99",
            vec![
                MetricLine::new(ALB_NAMESPACE, "TargetResponseTime", &lb)
                    .stat("p50")
                    .label("p50"),
                MetricLine::new(ALB_NAMESPACE, "TargetResponseTime", &lb)
                    .stat("p99")
                    .label("p99"),
            ],
            left(axis(Some(0), None, "seconds")),
        ),
    ]);
}

/// Healthy and unhealthy hosts per zone, and the availability check's metrics.
fn hosts_row(w: &Widgets<'_>, grid: &mut Grid, stack: &str, inputs: &ObservabilityInputs) {
    let mut hosts = Vec::new();
    for zone in &inputs.zones {
        let dims = [
            ("TargetGroup", inputs.target_group_arn_suffix.as_str()),
            ("LoadBalancer", inputs.load_balancer_arn_suffix.as_str()),
            ("AvailabilityZone", zone.as_str()),
        ];
        hosts.push(
            MetricLine::new(ALB_NAMESPACE, "HealthyHostCount", &dims)
                .stat("Minimum")
                .label(format!("healthy {zone}")),
        );
        hosts.push(
            MetricLine::new(ALB_NAMESPACE, "UnHealthyHostCount", &dims)
                .stat("Maximum")
                .label(format!("unhealthy {zone}")),
        );
    }
    let check = crate::check_namespace(stack);
    grid.row(vec![
        w.widget(
            "Healthy and unhealthy hosts per zone",
            "Average",
            hosts,
            left(axis(Some(0), None, "hosts")),
        ),
        w.widget(
            "Availability check",
            "Average",
            vec![
                MetricLine::new(&check, crate::SUCCESS_PERCENT, &[])
                    .stat("Minimum")
                    .label("success %"),
                MetricLine::new(&check, crate::LATENCY_P99, &[])
                    .stat("Maximum")
                    .label("p99 latency (ms)")
                    .right(),
                MetricLine::new(&check, crate::REQUEST_COUNT, &[])
                    .stat("Sum")
                    .label("check requests")
                    .right(),
            ],
            Some(YAxes {
                left: Some(axis(Some(0), Some(100), "%")),
                right: Some(axis(Some(0), None, "ms / requests")),
            }),
        ),
    ]);
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;

    pub(crate) fn inputs() -> ObservabilityInputs {
        ObservabilityInputs {
            zones: vec![
                "eu-west-1a".to_owned(),
                "eu-west-1b".to_owned(),
                "eu-west-1c".to_owned(),
            ],
            load_balancer_arn_suffix: "app/demo/0123456789abcdef".to_owned(),
            target_group_arn_suffix: "targetgroup/demo/fedcba9876543210".to_owned(),
            cluster_name: "demo".to_owned(),
            service_name: "demo-app".to_owned(),
        }
    }

    fn body() -> Value {
        let d = build(
            "demo",
            "eu-west-1",
            &ObservabilitySpec::default(),
            &inputs(),
        );
        serde_json::from_str(&d.to_json().unwrap()).unwrap()
    }

    fn widget<'a>(body: &'a Value, title: &str) -> &'a Value {
        body["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["properties"]["title"] == title)
            .unwrap_or_else(|| panic!("no widget {title:?} in {body:#}"))
    }

    #[test]
    fn widgets_have_the_body_format() {
        let body = body();
        let cpu = widget(&body, "ECS CPU and memory utilization");
        assert_eq!(cpu["type"], "metric");
        assert_eq!(cpu["width"], 12);
        assert_eq!(cpu["properties"]["view"], "timeSeries");
        assert_eq!(cpu["properties"]["region"], "eu-west-1");
        assert_eq!(cpu["properties"]["period"], 60);
        assert_eq!(cpu["properties"]["stacked"], false);
        assert_eq!(
            cpu["properties"]["yAxis"],
            json!({"left": {"min": 0, "max": 100, "label": "%", "showUnits": false}})
        );
        assert_eq!(
            cpu["properties"]["metrics"][0],
            json!(["AWS/ECS", "CPUUtilization", "ClusterName", "demo", "ServiceName", "demo-app", {"label": "CPU %"}])
        );
        assert_eq!(cpu["properties"]["metrics"][1][1], "MemoryUtilization");
        let text = &body["widgets"][0];
        assert_eq!(text["type"], "text");
        assert!(
            text["properties"]["markdown"]
                .as_str()
                .unwrap()
                .starts_with("# Stack demo"),
            "{text}"
        );
        // Nothing overlaps and everything fits the 24-column grid.
        let mut cells = std::collections::BTreeSet::new();
        for w in body["widgets"].as_array().unwrap() {
            let (x, y, width, height) = (
                w["x"].as_u64().unwrap(),
                w["y"].as_u64().unwrap(),
                w["width"].as_u64().unwrap(),
                w["height"].as_u64().unwrap(),
            );
            assert!(x + width <= 24, "{w}");
            for cx in x..x + width {
                for cy in y..y + height {
                    assert!(cells.insert((cx, cy)), "overlap at {cx},{cy}: {w}");
                }
            }
        }
    }

    #[test]
    fn every_zone_gets_a_healthy_and_an_unhealthy_line_with_all_three_dimensions() {
        let d = build(
            "demo",
            "eu-west-1",
            &ObservabilitySpec::default(),
            &inputs(),
        );
        let hosts = d
            .metric_widgets()
            .find(|w| w.title == "Healthy and unhealthy hosts per zone")
            .unwrap();
        assert_eq!(hosts.metrics.len(), 6);
        for zone in &inputs().zones {
            for metric in ["HealthyHostCount", "UnHealthyHostCount"] {
                let line = hosts
                    .metrics
                    .iter()
                    .find(|l| l.name == metric && l.dimension("AvailabilityZone") == Some(zone))
                    .unwrap_or_else(|| panic!("{metric} {zone}"));
                assert_eq!(line.namespace, "AWS/ApplicationELB");
                let names: Vec<&str> = line.dimensions.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(names, ["TargetGroup", "LoadBalancer", "AvailabilityZone"]);
                assert_eq!(
                    line.dimension("TargetGroup"),
                    Some("targetgroup/demo/fedcba9876543210")
                );
                assert_eq!(
                    line.dimension("LoadBalancer"),
                    Some("app/demo/0123456789abcdef")
                );
            }
        }
    }

    #[test]
    fn latency_uses_percentile_stats_and_codes_use_sums() {
        let body = body();
        let latency = widget(&body, "Target response time");
        let stats: Vec<&Value> = latency["properties"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l[4]["stat"])
            .collect();
        assert_eq!(stats, [&json!("p50"), &json!("p99")]);
        assert_eq!(latency["properties"]["metrics"][1][1], "TargetResponseTime");
        let codes = widget(&body, "Load balancer requests and status codes");
        assert_eq!(codes["properties"]["stat"], "Sum");
        let names: Vec<&str> = codes["properties"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[1].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "RequestCount",
                "HTTPCode_Target_2XX_Count",
                "HTTPCode_Target_4XX_Count",
                "HTTPCode_Target_5XX_Count",
                "HTTPCode_ELB_5XX_Count"
            ]
        );
        let tasks = widget(&body, "Running tasks");
        assert_eq!(
            tasks["properties"]["metrics"][0][0],
            "ECS/ContainerInsights"
        );
        assert_eq!(tasks["properties"]["metrics"][0][1], "RunningTaskCount");
    }

    #[test]
    fn the_availability_check_has_its_namespace_and_no_dimensions() {
        let body = body();
        let check = widget(&body, "Availability check");
        let lines = check["properties"]["metrics"].as_array().unwrap();
        let got: Vec<(String, String, usize)> = lines
            .iter()
            .map(|l| {
                (
                    l[0].as_str().unwrap().to_owned(),
                    l[1].as_str().unwrap().to_owned(),
                    l.as_array().unwrap().len(),
                )
            })
            .collect();
        let ns = "stackproof/demo".to_owned();
        assert_eq!(
            got,
            [
                (ns.clone(), "SuccessPercent".to_owned(), 3),
                (ns.clone(), "LatencyP99".to_owned(), 3),
                (ns, "RequestCount".to_owned(), 3)
            ]
        );
        assert_eq!(lines[1][2]["yAxis"], "right");
    }

    #[test]
    fn the_period_follows_the_configuration_and_lines_read_back() {
        let spec = ObservabilitySpec {
            period_seconds: 300,
            ..ObservabilitySpec::default()
        };
        let d = build("demo", "us-east-1", &spec, &inputs());
        assert!(
            d.metric_widgets()
                .all(|w| w.period == 300 && w.region == "us-east-1")
        );
        let back: Dashboard = serde_json::from_str(&d.to_json().unwrap()).unwrap();
        assert_eq!(back, d);
    }
}
