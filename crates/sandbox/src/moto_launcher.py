"""Starts a moto server for stackproof and prints `READY host:port` once it listens.

argv: host port mode, where mode is `watch-stdin` (exit when stdin closes: the parent died or
let go of us) or `forever` (a background daemon, stopped with SIGTERM).
"""
import os
import sys
import threading

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.server import ThreadedMotoServer  # noqa: E402


def _patch_moto():
    """Work around two moto 5.2.5 bugs that make ECS RunTask answer 500 for valid Fargate
    tasks (the sandbox data plane records its tasks with RunTask):
    - a task ENI in a VPC without DNS hostnames has no `private_dns_name` attribute;
    - a container definition without `memory`/`memoryReservation` (legal on Fargate) adds
      None to the task's memory total.
    Each patch only fills a missing value, so a fixed moto is unaffected."""
    try:
        from moto.ec2.models.elastic_network_interfaces import NetworkInterface
        from moto.ecs.models import EC2ContainerServiceBackend
    except ImportError:
        return
    if not hasattr(NetworkInterface, "private_dns_name"):
        NetworkInterface.private_dns_name = None
    original = EC2ContainerServiceBackend._calculate_task_resource_requirements

    def calculate(task_definition):
        # Compute on copies: the stored definition (what DescribeTaskDefinition shows) stays.
        stored = task_definition.container_definitions
        copies = []
        for c in stored:
            c = dict(c) if isinstance(c, dict) else c
            if isinstance(c, dict) and all(
                c.get(k) is None
                for k in ("memory", "memoryReservation", "Memory", "MemoryReservation")
            ):
                c.pop("Memory", None)
                c.pop("MemoryReservation", None)
                c["memory"] = 0
            copies.append(c)
        task_definition.container_definitions = copies
        try:
            return original(task_definition)
        finally:
            task_definition.container_definitions = stored

    EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(calculate)

    # moto moves a RUNNING task towards STOPPED each time it is described; the sandbox runs
    # the task, so its state changes only through StopTask.
    try:
        from moto.moto_api import state_manager

        state_manager.set_transition(
            model_name="ecs::task", transition={"progression": "manual", "times": 10**9}
        )
    except Exception:  # noqa: BLE001 - an older moto without the state manager
        pass


_patch_moto()


def _patch_policy_conditions():
    """moto 5.2.5 evaluates bucket policies on object requests, but it turns any statement
    that does not apply to the request (another principal, a condition that does not hold) into
    an explicit deny, and it knows almost no condition keys. The storage module's bucket policy
    (deny without TLS, allow the log-delivery principal) therefore refused every PutObject, the
    sandbox's ALB access logs included. Here a statement that does not apply is neutral, as in
    AWS, and requests count as TLS: the sandbox stands in for AWS's HTTPS endpoints."""
    try:
        from moto.iam.access_control import IAMPolicyStatement, PermissionResult
    except ImportError:
        return
    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self, action, resource="*", principal=None, incoming_condition_values=None):
        values = dict(incoming_condition_values or {})
        values.setdefault("aws:SecureTransport", "true")
        # moto has no `Bool` operator (it holds for any value): evaluate the TLS key here.
        tls = (self._statement.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")
        if tls is not None:
            wanted = [tls] if isinstance(tls, str) else list(tls)
            if values["aws:SecureTransport"] not in [str(w).lower() for w in wanted]:
                return PermissionResult.NEUTRAL
        if self._statement.get("Condition") and not self._check_conditions(values):
            return PermissionResult.NEUTRAL
        if principal and self._statement.get("Principal") and not self._check_principal(principal):
            return PermissionResult.NEUTRAL
        return original(self, action, resource, principal, values)

    IAMPolicyStatement.is_action_permitted = is_action_permitted


_patch_policy_conditions()


def _patch_service_grace():
    """moto 5.2.5 drops `healthCheckGracePeriodSeconds` on CreateService (UpdateService keeps
    it), so DescribeServices never shows it. The data plane waits that long after a task starts
    before it replaces the task for failing its load balancer health checks, as ECS does."""
    try:
        from moto.ecs.responses import EC2ContainerServiceResponse
    except ImportError:
        return
    original = EC2ContainerServiceResponse.create_service

    def create_service(self):
        result = original(self)
        grace = self._get_param("healthCheckGracePeriodSeconds")
        if grace is not None:
            try:
                service = self.ecs_backend._get_service(
                    self._get_param("cluster", "default"), self._get_param("serviceName")
                )
                if getattr(service, "health_check_grace_period_seconds", None) is None:
                    service.health_check_grace_period_seconds = int(grace)
            except Exception:  # noqa: BLE001 - leave moto's answer as it is
                pass
        return result

    EC2ContainerServiceResponse.create_service = create_service


_patch_service_grace()


def _patch_task_state_change():
    """moto has no SubmitTaskStateChange, the ECS API the container agent reports a task's
    state with. The sandbox data plane is the agent of its tasks: it reports PROVISIONING,
    PENDING and RUNNING as its tasks launch, so DescribeTasks shows what ECS would (moto
    itself creates every task RUNNING), and STOPPED with the container's exit code and the
    reason when a task's process exits by itself (a standalone task's essential container)."""
    try:
        from moto.ecs.responses import EC2ContainerServiceResponse
    except ImportError:
        return
    if hasattr(EC2ContainerServiceResponse, "submit_task_state_change"):
        return
    allowed = {"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "STOPPED"}

    def submit_task_state_change(self):
        import json

        cluster = self._get_param("cluster", "default")
        task_id = self._get_param("task")
        status = self._get_param("status")
        if status not in allowed:
            return 400, {}, json.dumps({
                "__type": "InvalidParameterException",
                "message": f"status {status!r}: one of {sorted(allowed)}",
            })
        tasks = self.ecs_backend.describe_tasks(cluster, [task_id])
        if not tasks:
            return 400, {}, json.dumps({
                "__type": "InvalidParameterException",
                "message": f"task {task_id!r} not found in cluster {cluster!r}",
            })
        task = tasks[0]
        if task.desired_status == "STOPPED":
            return 200, {}, json.dumps({"acknowledgment": "REJECT"})
        if status == "STOPPED":
            task.desired_status = "STOPPED"
            task.stopped_reason = self._get_param("reason") or "Essential container in task exited"
            for reported in self._get_param("containers") or []:
                for container in task.containers:
                    if reported.get("containerName") in (None, container.name):
                        if reported.get("exitCode") is not None:
                            container.exitCode = reported["exitCode"]
                        container.last_status = "STOPPED"
        task.last_status = status
        return 200, {}, json.dumps({"acknowledgment": "ACCEPT"})

    EC2ContainerServiceResponse.submit_task_state_change = submit_task_state_change


_patch_task_state_change()


def _patch_arc_zonal_shift():
    """moto has no ARC zonal shift (`arc-zonal-shift`). This is its part the sandbox needs:
    StartZonalShift, ListZonalShifts, CancelZonalShift and UpdateZonalShift on a load balancer
    whose `zonal_shift.config.enabled` attribute is on, one active shift per resource, expiry
    from `expiresIn` (1 minute to 3 days), per account (`x-moto-account-id`) and region. The
    data plane reads the active shifts with ListZonalShifts, as it reads everything else."""
    import json
    import re
    import threading as _threading
    import time as _time
    import uuid

    try:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication
        from moto.elbv2.models import elbv2_backends
        from moto.ec2.models import ec2_backends
    except ImportError:
        return

    lock = _threading.Lock()
    shifts = {}  # (account, region) -> {id: shift}

    def error(status, kind, message):
        return status, json.dumps({"message": message}), {"x-amzn-errortype": kind}

    def parse_expiry(text):
        m = re.fullmatch(r"(\d+)([mh])", text or "")
        if not m:
            return None
        n = int(m.group(1)) * (60 if m.group(2) == "m" else 3600)
        return n if 60 <= n <= 3 * 24 * 3600 else None

    def view(s):
        now = _time.time()
        status = s["status"]
        if status == "ACTIVE" and s["expiryTime"] <= now:
            status = "EXPIRED"
        out = dict(s)
        out["status"] = status
        return out

    def zone_ids(account, region):
        try:
            return {z.zone_id for z in ec2_backends[account][region].describe_availability_zones()}
        except Exception:  # noqa: BLE001 - no zone list: accept any id
            return None

    def handle(method, path, query, body, account, region):
        store = shifts.setdefault((account, region), {})
        if path == "/zonalshifts" and method == "POST":
            req = json.loads(body or b"{}")
            resource = req.get("resourceIdentifier", "")
            away = req.get("awayFrom", "")
            expires = parse_expiry(req.get("expiresIn"))
            if expires is None:
                return error(400, "ValidationException",
                             f"expiresIn {req.get('expiresIn')!r}: minutes (`30m`) or hours (`2h`), 1 minute to 3 days")
            lb = elbv2_backends[account][region].load_balancers.get(resource)
            if lb is None:
                return error(404, "ResourceNotFoundException", f"resource {resource!r} not found")
            if str(lb.attrs.get("zonal_shift.config.enabled", "false")).lower() != "true":
                return error(400, "ValidationException",
                             f"resource {resource!r} is not registered with zonal shift (zonal_shift.config.enabled is off)")
            ids = zone_ids(account, region)
            if ids is not None and away not in ids:
                return error(400, "ValidationException",
                             f"awayFrom {away!r}: one of the region's zone ids {sorted(ids)}")
            for s in store.values():
                if s["resourceIdentifier"] == resource and view(s)["status"] == "ACTIVE":
                    return error(409, "ConflictException",
                                 f"resource {resource!r} already has an active zonal shift {s['zonalShiftId']}")
            now = _time.time()
            s = {
                "zonalShiftId": str(uuid.uuid4()),
                "resourceIdentifier": resource,
                "awayFrom": away,
                "comment": req.get("comment", ""),
                "startTime": now,
                "expiryTime": now + expires,
                "status": "ACTIVE",
            }
            store[s["zonalShiftId"]] = s
            return 201, json.dumps(view(s)), {}
        if path == "/zonalshifts" and method == "GET":
            items = [view(s) for s in store.values()]
            status = query.get("status", [None])[0]
            resource = query.get("resourceIdentifier", [None])[0]
            items = [s for s in items
                     if (status is None or s["status"] == status)
                     and (resource is None or s["resourceIdentifier"] == resource)]
            items.sort(key=lambda s: s["startTime"])
            return 200, json.dumps({"items": items}), {}
        m = re.fullmatch(r"/zonalshifts/([^/]+)", path)
        if m:
            s = store.get(m.group(1))
            if s is None:
                return error(404, "ResourceNotFoundException", f"zonal shift {m.group(1)!r} not found")
            if view(s)["status"] != "ACTIVE":
                return error(409, "ConflictException", f"zonal shift {m.group(1)!r} is {view(s)['status']}")
            if method == "DELETE":
                s["status"] = "CANCELED"
                return 200, json.dumps(view(s)), {}
            if method == "PATCH":
                req = json.loads(body or b"{}")
                if "expiresIn" in req:
                    expires = parse_expiry(req["expiresIn"])
                    if expires is None:
                        return error(400, "ValidationException", f"expiresIn {req['expiresIn']!r}")
                    s["expiryTime"] = _time.time() + expires
                if "comment" in req:
                    s["comment"] = req["comment"]
                return 200, json.dumps(view(s)), {}
        return error(404, "ResourceNotFoundException", f"{method} {path}: not implemented by the sandbox")

    original = DomainDispatcherApplication.__call__

    def __call__(self, environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "/arc-zonal-shift/aws4_request" not in auth:
            return original(self, environ, start_response)
        from urllib.parse import parse_qs, unquote
        try:
            scope = auth.split("Credential=")[1].split(",")[0].split("/")
            region = scope[2]
        except IndexError:
            region = "us-east-1"
        account = environ.get("HTTP_X_MOTO_ACCOUNT_ID", "123456789012")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        path = unquote(environ.get("PATH_INFO", ""))
        query = parse_qs(environ.get("QUERY_STRING", ""))
        with lock:
            status, text, headers = handle(environ.get("REQUEST_METHOD", "GET"), path, query, body, account, region)
        reasons = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}
        out = [("Content-Type", "application/json")] + list(headers.items())
        start_response(f"{status} {reasons.get(status, 'Error')}", out)
        return [text.encode()]

    DomainDispatcherApplication.__call__ = __call__


_patch_arc_zonal_shift()

def _patch_fis():
    """moto keeps FIS experiments but runs none: it moves an experiment's state one step each
    time it is described. The sandbox data plane is the executor (it applies and reverts the
    experiment's action), so here an experiment's state changes only through the executor's
    reports: a `stackproof:sandbox-state` tag (`running`, `completed`, `stopped` or `failed`,
    then `: reason`) sent with TagResource becomes the experiment's state and reason and is not
    kept as a tag. StopExperiment still moves it to `stopping`, which the executor ends."""
    try:
        from moto.fis.models import Experiment, FISBackend
        from moto.moto_api import state_manager
    except ImportError:
        return
    state_manager.set_transition(
        model_name="fis::experiment", transition={"progression": "manual", "times": 10**9}
    )
    key = "stackproof:sandbox-state"
    original_tag = FISBackend.tag_resource

    def tag_resource(self, resource_arn, tags):
        tags = dict(tags or {})
        state = tags.pop(key, None)
        if state is not None:
            for e in self.experiments.values():
                if e.arn == resource_arn:
                    status, _, reason = state.partition(": ")
                    e.status = status
                    e.stackproof_reason = reason or None
                    break
        if tags:
            original_tag(self, resource_arn, tags)

    FISBackend.tag_resource = tag_resource

    def with_reason(original):
        def wrapped(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            reason = getattr(self, "stackproof_reason", None)
            if reason and isinstance(out.get("state"), dict):
                out["state"]["reason"] = reason
            return out

        return wrapped

    Experiment.to_dict = with_reason(Experiment.to_dict)
    Experiment.to_summary_dict = with_reason(Experiment.to_summary_dict)


_patch_fis()


def _patch_rds_zone():
    """RDS reports where a Multi-AZ instance's primary runs in its AvailabilityZone, and moves
    it after a failover. The sandbox data plane runs failovers; it reports the primary's new
    zone with a `stackproof:sandbox-az` tag sent with AddTagsToResource, which sets the
    instance's AvailabilityZone here and is not kept as a tag."""
    try:
        from moto.rds.models import RDSBackend
    except ImportError:
        return
    key = "stackproof:sandbox-az"
    original = RDSBackend.add_tags_to_resource

    def add_tags_to_resource(self, arn, tags):
        zone = None
        rest = []
        for t in tags or []:
            if t.get("Key") == key:
                zone = t.get("Value")
            else:
                rest.append(t)
        if zone:
            resource = self._get_resource_for_tagging(arn)
            if resource is not None and hasattr(resource, "availability_zone"):
                resource.availability_zone = zone
        return original(self, arn, rest)

    RDSBackend.add_tags_to_resource = add_tags_to_resource


_patch_rds_zone()


def _patch_rds_multi_az_clusters():
    """RDS makes a Multi-AZ DB cluster's three DB instances itself (a writer and two readable
    standbys, `{cluster}-instance-1` to `-3`, one in each of three zones of the DB subnet group)
    and deletes them with the cluster. moto makes none (its clusters are Aurora's, whose
    instances the caller adds) and refuses to delete a cluster that has any. Here a cluster of
    the `postgres` or `mysql` engine with a DBClusterInstanceClass gets its three, a subnet group
    over fewer than three zones is refused as RDS refuses it, and DeleteDBCluster deletes the
    three first."""
    try:
        from moto.rds.exceptions import RDSClientError
        from moto.rds.models import RDSBackend
    except ImportError:
        return
    original_create = RDSBackend.create_db_cluster
    original_delete = RDSBackend.delete_db_cluster

    def multi_az(kwargs):
        return kwargs.get("engine") in ("postgres", "mysql") and kwargs.get(
            "db_cluster_instance_class"
        )

    def create_db_cluster(self, kwargs):
        if not multi_az(kwargs):
            return original_create(self, kwargs)
        group = self.subnet_groups.get(kwargs.get("db_subnet_group_name") or "")
        zones = sorted({s.availability_zone for s in getattr(group, "_subnets", [])})
        if len(zones) < 3:
            raise RDSClientError(
                "DBSubnetGroupDoesNotCoverEnoughAZs",
                "A Multi-AZ DB cluster needs a DB subnet group with subnets in at least three "
                f"Availability Zones; it covers {len(zones)}.",
            )
        cluster = original_create(self, kwargs)
        cluster.availability_zones = zones[:3]
        for n, zone in enumerate(zones[:3], start=1):
            self.create_db_instance(
                {
                    "db_instance_identifier": f"{cluster.db_cluster_identifier}-instance-{n}",
                    "db_cluster_identifier": cluster.db_cluster_identifier,
                    "engine": cluster.engine,
                    "db_instance_class": cluster.db_cluster_instance_class,
                    "availability_zone": zone,
                    "db_subnet_group_name": kwargs.get("db_subnet_group_name"),
                    "port": cluster.port,
                    "publicly_accessible": False,
                    "tags": list(cluster.tags or []),
                }
            )
        return cluster

    def delete_db_cluster(self, cluster_identifier, snapshot_name=None):
        cluster = self.clusters.get(cluster_identifier)
        if (
            cluster is not None
            and cluster.engine in ("postgres", "mysql")
            and cluster.db_cluster_instance_class
            and not cluster.deletion_protection
        ):
            for member in list(cluster._members):
                self.databases.pop(member.db_instance_identifier, None)
        return original_delete(self, cluster_identifier, snapshot_name)

    RDSBackend.create_db_cluster = create_db_cluster
    RDSBackend.delete_db_cluster = delete_db_cluster


_patch_rds_multi_az_clusters()


def _patch_rds_forced_failover():
    """RebootDBInstance with ForceFailover fails a Multi-AZ instance over to its standby, and
    is refused for a Single-AZ one. moto ignores the flag; here it is checked as RDS does and
    handed to the sandbox data plane, which runs failovers, as a `stackproof:sandbox-failover`
    tag on the instance (the plane removes it once it has begun)."""
    try:
        from moto.rds.exceptions import RDSClientError
        from moto.rds.responses import RDSResponse
    except ImportError:
        return
    key = "stackproof:sandbox-failover"
    original = RDSResponse.reboot_db_instance

    def reboot_db_instance(self):
        force = str(self.params.get("ForceFailover", "")).lower() == "true"
        if force:
            db = self.backend.describe_db_instances(self.params.get("DBInstanceIdentifier"))[0]
            if not db.multi_az:
                raise RDSClientError(
                    "InvalidParameterCombination",
                    "Cannot perform a forced failover: the DB instance is not Multi-AZ.",
                )
            tags = [t for t in (db.tags or []) if t.get("Key") != key]
            tags.append({"Key": key, "Value": "requested"})
            db.tags = tags
        return original(self)

    RDSResponse.reboot_db_instance = reboot_db_instance


_patch_rds_forced_failover()

def _patch_elasticache():
    """ElastiCache as the cache module and the data plane use it. moto 5 ignores
    NumCacheClusters for a cluster-mode-disabled group (it makes replicas only from
    ReplicasPerNodeGroup), keeps a deleted replication group as "deleting" for ever and has no
    DeleteCacheSubnetGroup; AWS honours the first, removes a deleted group once its nodes are
    gone, and deletes a subnet group no group uses. The data plane reports a failover's new
    primary with a `stackproof:sandbox-primary` tag (the member cluster's id) on the group, which
    swaps the members' CurrentRole here and is not kept as a tag."""
    try:
        from moto.core.responses import ActionResult
        from moto.elasticache.exceptions import CacheSubnetGroupNotFound
        from moto.elasticache.models import ElastiCacheBackend
        from moto.elasticache.responses import ElastiCacheResponse
    except ImportError:
        return

    original_create = ElastiCacheBackend.create_replication_group

    def create_replication_group(self, *args, **kwargs):
        n = kwargs.get("num_cache_clusters")
        if kwargs.get("cluster_mode") != "enabled" and not kwargs.get("replicas_per_node_group") and n:
            kwargs["replicas_per_node_group"] = max(int(n) - 1, 0)
        return original_create(self, *args, **kwargs)

    ElastiCacheBackend.create_replication_group = create_replication_group

    original_delete = ElastiCacheBackend.delete_replication_group

    def delete_replication_group(self, replication_group_id, retain_primary_cluster):
        group = original_delete(self, replication_group_id, retain_primary_cluster)
        self.replication_groups.pop(replication_group_id, None)
        return group

    ElastiCacheBackend.delete_replication_group = delete_replication_group

    def delete_cache_subnet_group(self):
        name = self._get_param("CacheSubnetGroupName")
        backend = self.elasticache_backend
        if name not in backend.cache_subnet_groups:
            raise CacheSubnetGroupNotFound(name)
        group = backend.cache_subnet_groups.pop(name)
        backend.tagging_service.delete_all_tags_for_resource(group.arn)
        return ActionResult({})

    ElastiCacheResponse.delete_cache_subnet_group = delete_cache_subnet_group

    key = "stackproof:sandbox-primary"
    original_tag = ElastiCacheBackend.add_tags_to_resource

    def add_tags_to_resource(self, arn, tags):
        primary = None
        rest = []
        for t in tags or []:
            if t.get("Key") == key:
                primary = t.get("Value")
            else:
                rest.append(t)
        if primary:
            for group in self.replication_groups.values():
                if group.arn != arn:
                    continue
                for node_group in group.node_groups:
                    for member in node_group.get("node_group_members", []):
                        is_primary = member.get("cache_cluster_id") == primary
                        member["current_role"] = "primary" if is_primary else "replica"
        if rest:
            original_tag(self, arn, rest)

    ElastiCacheBackend.add_tags_to_resource = add_tags_to_resource


_patch_elasticache()

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
server.start()
bound_host, bound_port = server.get_host_and_port()
print(f"READY {bound_host}:{bound_port}", flush=True)
if mode == "watch-stdin":
    sys.stdin.read()
    os._exit(0)
threading.Event().wait()
