//! The deploy graph: each module starts as soon as what it needs exists.

use infra::{Context, Module};
use tokio::sync::watch;

use crate::{Error, Stack, StackOutputs, links};

/// Where one module's outputs are handed to the modules that wait on them.
fn handoff<T>() -> (watch::Sender<Option<T>>, Waiter<T>) {
    let (tx, rx) = watch::channel(None);
    (tx, Waiter(rx))
}

/// Waits for one module's outputs.
#[derive(Clone)]
struct Waiter<T>(watch::Receiver<Option<T>>);

impl<T: Clone> Waiter<T> {
    /// The outputs, once their module has them. If that module fails they never come: the
    /// deploy then ends with the module's error, and what waits here is dropped.
    async fn get(mut self) -> T {
        let got = match self.0.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        match got {
            Some(value) => value,
            None => std::future::pending().await,
        }
    }
}

impl Stack {
    /// Converges every module and returns the outputs. Each module starts as soon as what it
    /// needs exists, rather than when the module before it ends:
    ///
    /// - storage and the network start at once; compute's IAM roles, log group and cluster as
    ///   soon as storage has the repository (the roles' policies name the account and the
    ///   image's repository);
    /// - the load balancer starts once the network's subnets and security groups exist and the
    ///   log bucket is ready, while the network waits for its NAT gateways;
    /// - compute's task definition, service and scaling start once the whole network (private
    ///   routes included: tasks pull their image through the NAT), the repository and the
    ///   target group exist;
    /// - the database once the network's subnets and security groups exist; with one,
    ///   compute's roles and task definition also wait for it (its endpoint and secret);
    /// - observability starts once the load balancer exists.
    ///
    /// The first error ends the deploy; what else was in flight stops where it is, and the
    /// next run converges from what exists.
    pub async fn apply(&self, cx: &Context) -> Result<StackOutputs, Error> {
        let m = self.modules(cx);
        let (storage_tx, storage_rx) = handoff();
        let (early_tx, early_rx) = handoff();
        let (network_tx, network_rx) = handoff();
        let (lb_tx, lb_rx) = handoff();

        let storage = async {
            let out = m.storage.apply(cx, &()).await?;
            storage_tx.send_replace(Some(out.clone()));
            Ok::<_, Error>(out)
        };
        let network = async {
            let out = m
                .network
                .apply_staged(cx, |early| {
                    early_tx.send_replace(Some(early));
                })
                .await?;
            network_tx.send_replace(Some(out.clone()));
            Ok::<_, Error>(out)
        };
        let load_balancer = async {
            let (net, storage) = tokio::join!(early_rx.clone().get(), storage_rx.clone().get());
            let out = m
                .load_balancer
                .apply(cx, &self.lb_inputs(&net, &storage))
                .await?;
            lb_tx.send_replace(Some(out.clone()));
            Ok::<_, Error>(out)
        };
        let (data_tx, data_rx) = handoff::<Option<data::DataOutputs>>();
        let (cache_tx, cache_rx) = handoff::<Option<data::CacheOutputs>>();
        let compute = async {
            // The service is handed the database's endpoint and secret, so with a database
            // the task definition waits for it.
            let inputs = async {
                let (net, storage, lb, db, cache) = tokio::join!(
                    network_rx.clone().get(),
                    storage_rx.clone().get(),
                    lb_rx.clone().get(),
                    data_rx.clone().get(),
                    cache_rx.clone().get()
                );
                self.compute_inputs(&net, &storage, &lb, db.as_ref(), cache.as_ref())
            };
            // The roles grant the database's secret: with a database they wait for it too.
            let foundation = async {
                let (storage, db, cache) = tokio::join!(
                    storage_rx.clone().get(),
                    data_rx.clone().get(),
                    cache_rx.clone().get()
                );
                compute::FoundationInputs {
                    account_id: storage.account_id.clone(),
                    default_image: format!(
                        "{}:{}",
                        storage.repository_uri,
                        crate::DEFAULT_IMAGE_TAG
                    ),
                    linked: links(db.as_ref(), cache.as_ref()),
                }
            };
            Ok::<_, Error>(m.compute.apply_staged(cx, foundation, inputs).await?)
        };
        // The database once the network's subnets and the tasks' security group exist.
        let data = async {
            let Some(d) = &m.data else {
                data_tx.send_replace(Some(None));
                return Ok::<_, Error>(None);
            };
            let net = early_rx.clone().get().await;
            let out = d.apply(cx, &Self::data_inputs(&net)).await?;
            data_tx.send_replace(Some(Some(out.clone())));
            Ok(Some(out))
        };
        // The cache likewise.
        let cache = async {
            let Some(c) = &m.cache else {
                cache_tx.send_replace(Some(None));
                return Ok::<_, Error>(None);
            };
            let net = early_rx.clone().get().await;
            let out = c.apply(cx, &Self::data_inputs(&net)).await?;
            cache_tx.send_replace(Some(Some(out.clone())));
            Ok(Some(out))
        };
        let observability = async {
            let (net, lb) = tokio::join!(early_rx.clone().get(), lb_rx.clone().get());
            Ok::<_, Error>(
                m.observability
                    .apply(cx, &self.observability_inputs(&net, &lb))
                    .await?,
            )
        };
        // Each branch on the heap: together the SDK's futures are too big for a thread's stack.
        let (storage, network, load_balancer, compute, observability, data, cache) = tokio::try_join!(
            Box::pin(storage),
            Box::pin(network),
            Box::pin(load_balancer),
            Box::pin(compute),
            Box::pin(observability),
            Box::pin(data),
            Box::pin(cache)
        )?;
        Ok(StackOutputs {
            stack: self.name.to_string(),
            region: self.region.clone(),
            storage,
            network,
            load_balancer,
            compute,
            observability,
            data,
            cache,
        })
    }
}
