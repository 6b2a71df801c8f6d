"""Authentication by bearer token and RBAC authorization, as kube-apiserver does them.

The emulator keeps Roles, ClusterRoles, RoleBindings and ClusterRoleBindings as ordinary objects
in its store (POST them as an admin, e.g. the ones the Helm chart renders, see `chart_rbac`);
every resource request is allowed only when one of them grants it, and denied with the API
server's own 403 `Status`. Decisions are cached until an RBAC object changes.

What is modelled: users and groups from tokens (`system:masters` bypasses authorization, as in a
cluster); ServiceAccount, User and Group subjects; ClusterRoleBindings; RoleBindings to a Role or
a ClusterRole (granting in their namespace only); verbs including `*`; apiGroups and resources
including `*`, `<resource>/<subresource>`, `<resource>/*` and `*/<subresource>`; resourceNames
(never satisfied by create, list, watch or deletecollection, as in kube-apiserver); the built-in
`system:discovery` and `system:public-info-viewer` non-resource paths. Not modelled: aggregated
ClusterRoles (aggregationRule), nonResourceURLs rules in user roles, impersonation, escalation
checks on writing RBAC objects.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from kubeforge.testing.kube_objects import ApiError, Body

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_PLURALS = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
ANONYMOUS = "system:anonymous"

# Non-resource paths every authenticated user may GET (system:discovery, system:basic-user),
# and the few that even anonymous requests may (system:public-info-viewer).
DISCOVERY_PREFIXES = ("/api", "/apis", "/openapi", "/version", "/healthz", "/livez", "/readyz")
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()

    @classmethod
    def service_account(cls, namespace: str, name: str) -> UserInfo:
        return cls(f"system:serviceaccount:{namespace}:{name}",
                   ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))


ANONYMOUS_USER = UserInfo(ANONYMOUS, ("system:unauthenticated",))


@dataclass(frozen=True)
class Attributes:
    """What a resource request asks to do (kube-apiserver's authorizer.Attributes)."""

    verb: str
    group: str
    resource: str  # plural
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def request_verb(method: str, name: str | None, watch: bool) -> str:
    """The RBAC verb of an HTTP request on a resource path."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "watch" if watch else ("get" if name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or \
        ("delete" if name else "deletecollection")


def forbidden(user: UserInfo, attrs: Attributes) -> ApiError:
    """The API server's 403, word for word."""
    named = f' "{attrs.name}"' if attrs.name else ""
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    message = (f'{attrs.qualified}{named} is forbidden: User "{user.name}" cannot {attrs.verb} resource '
               f'"{attrs.full_resource}" in API group "{attrs.group}" {scope}')
    details: Body = {"group": attrs.group, "kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    return ApiError(403, "Forbidden", message, details)


def forbidden_path(user: UserInfo, verb: str, path: str) -> ApiError:
    return ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {verb} path "{path}"', {})


def _matches(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]


def rule_allows(rule: Body, attrs: Attributes) -> bool:
    """One PolicyRule against the request (rbac/v1 RuleAllows)."""
    if not _matches(rule.get("verbs"), attrs.verb) or not _matches(rule.get("apiGroups"), attrs.group):
        return False
    resources = rule.get("resources") or []
    if attrs.subresource:
        combined = attrs.full_resource
        if not ("*" in resources or combined in resources or f"{attrs.resource}/*" in resources
                or f"*/{attrs.subresource}" in resources):
            return False
    elif not ("*" in resources or attrs.resource in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or (attrs.name is not None and attrs.name in names)


def _subject_matches(subject: Body, user: UserInfo) -> bool:
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
    if kind == "User":
        return user.name == subject.get("name")
    if kind == "Group":
        return subject.get("name") in user.groups
    return False


@dataclass
class RbacAuthorizer:
    """Tokens -> users, and RBAC decisions over the RBAC objects of an `ObjectStore`."""

    objects: Any  # ObjectStore.objects: {(group, plural): {(ns, name): body}}
    tokens: dict[str, UserInfo] = field(default_factory=dict)
    # (user, attrs) -> allowed; emptied whenever an RBAC object changes.
    _cache: dict[tuple[UserInfo, Attributes], bool] = field(default_factory=dict)

    def issue(self, user: UserInfo, token: str | None = None) -> str:
        token = token or f"kube-emulator-{secrets.token_hex(12)}"
        self.tokens[token] = user
        return token

    def authenticate(self, authorization: str | None) -> UserInfo:
        """The user of an `Authorization` header; anonymous without one; 401 for an unknown token."""
        if not authorization:
            return ANONYMOUS_USER
        scheme, _, token = authorization.partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def invalidate(self) -> None:
        self._cache.clear()

    def allowed(self, user: UserInfo, attrs: Attributes) -> bool:
        if MASTERS in user.groups:
            return True
        key = (user, attrs)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._cache[key] = any(rule_allows(rule, attrs) for rule in self._rules(user, attrs.namespace))
        return decision

    def authorize(self, user: UserInfo, attrs: Attributes) -> None:
        if not self.allowed(user, attrs):
            raise forbidden(user, attrs)

    def authorize_path(self, user: UserInfo, method: str, path: str) -> None:
        """Discovery and version paths (GET only): any authenticated user; a few public ones for all."""
        verb = method.lower()
        if MASTERS in user.groups:
            return
        prefixes = DISCOVERY_PREFIXES if AUTHENTICATED in user.groups else PUBLIC_PATHS
        if verb in ("get", "head") and any(path == p or path.startswith(p + "/") for p in prefixes):
            return
        raise forbidden_path(user, verb, path)

    def _role_rules(self, ref: Body, namespace: str | None) -> list[Body]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.objects[(RBAC_GROUP, "clusterroles")].get(("", name))
        elif kind == "Role" and namespace:
            role = self.objects[(RBAC_GROUP, "roles")].get((namespace, name))
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def _rules(self, user: UserInfo, namespace: str | None) -> list[Body]:
        rules: list[Body] = []
        for binding in self.objects[(RBAC_GROUP, "clusterrolebindings")].values():
            if any(_subject_matches(s, user) for s in binding.get("subjects") or []):
                rules += self._role_rules(binding.get("roleRef") or {}, None)
        if namespace:
            for (ns, _), binding in self.objects[(RBAC_GROUP, "rolebindings")].items():
                if ns == namespace and any(_subject_matches(s, user) for s in binding.get("subjects") or []):
                    rules += self._role_rules(binding.get("roleRef") or {}, namespace)
        return rules
