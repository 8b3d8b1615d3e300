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

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
server.start()
bound_host, bound_port = server.get_host_and_port()
print(f"READY {bound_host}:{bound_port}", flush=True)
if mode == "watch-stdin":
    sys.stdin.read()
    os._exit(0)
threading.Event().wait()
