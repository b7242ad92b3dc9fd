"""The web app's pages: sign-in, catalog, sources, destination instances, filters, publishing.

Reads use the same store and Service queries as the Config API (``list_sources``,
``instances``, ``catalog.search``, ``status``, ``list_bundles``); every change is one Service
write (``add_instance``, ``update_instance``, ``delete_instance``, ``add_filter``,
``update_filter``, ``delete_filter``, ``rollback``), so it is checked, committed and published
exactly as a Config API write is. A refusal re-renders the form with what the user typed and
the write path's message next to the field it is about, with the refusal's status.

Whether a source may take another instance of a destination is the destination rules' own
answer (``rules.check_source`` over the source's instances plus a candidate): where no
connection mode passes, the option to add one is not offered.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.settings import EdgeSettings
from publisher.api.auth import authenticate
from publisher.api.plumbing import read_body, state
from publisher.api.shapes import masked
from publisher.core import filters as filters_mod
from publisher.core.catalog import CatalogDestination
from publisher.core.model import CONNECTION_MODES, Instance, Source
from publisher.core.rules import check_source
from publisher.core.specs import InstanceSpec, filter_dict
from publisher.errors import InvalidArgument, NotFound, PublisherError
from publisher.publish import PublishResult
from publisher.service import Service
from publisher.web.base import (
    BASE,
    Ctx,
    SignInRequired,
    error_page,
    posted,
    render,
    see_other,
    signed_in,
    signer,
)
from publisher.web.forms import (
    ACTIONS,
    FieldErrors,
    Form,
    filter_form,
    input_kind,
    place,
    read_filter,
    read_settings,
    setting_field,
    shown_value,
)
from publisher.web.session import COOKIE, COOKIE_PATH, LOGIN_COOKIE, LOGIN_SECONDS

SEARCH_LIMIT = 60
MODE_LABEL = {"CLOUD": "Cloud mode", "DEVICE": "Device mode"}


# -- cookies ---------------------------------------------------------------------------------

def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(request))


# -- sign-in ---------------------------------------------------------------------------------

def _login_page(request: Request, status: int = 200, error: str = "") -> Response:
    cookie, token = signer(request).new_login()
    response = render(request, "login.html", None, status=status, login_csrf=token,
                      error=error)
    _set_cookie(request, response, LOGIN_COOKIE, cookie, LOGIN_SECONDS)
    return response


async def login_form(request: Request) -> Response:
    return _login_page(request)


async def login(request: Request) -> Response:
    st = state(request)
    form = Form(await read_body(request, st.settings))
    if not signer(request).login_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return _login_page(request, 403, "The sign-in form expired or was not sent from this "
                                         "site: sign in again.")
    token = form.get("token").strip()
    try:
        who = await run_in_threadpool(authenticate, st.service, f"Bearer {token}")
    except PublisherError:
        return _login_page(request, 401, "That token is not valid: give a Config API token "
                                         "(`settings-cdn-publisher token create WORKSPACE "
                                         "--scope read|write`).")
    from publisher.api.auth import hash_token

    value, session = signer(request).new_session(hash_token(token))
    response = see_other(f"{BASE}/")
    _set_cookie(request, response, COOKIE, value, signer(request).session_seconds)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    del who, session
    return response


async def logout(request: Request) -> Response:
    ctx = await signed_in(request)
    form = Form(await read_body(request, state(request).settings))
    from publisher.web.session import csrf_ok

    if not csrf_ok(ctx.session, form.get("csrf")):
        return error_page(request, InvalidArgument("the form's CSRF token is missing or wrong",
                                                   code="csrf"), ctx)
    signer(request).end(ctx.session)
    response = see_other(f"{BASE}/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


async def home(request: Request) -> Response:
    try:
        ctx = await signed_in(request)
    except SignInRequired:
        return see_other(f"{BASE}/login")
    return render(request, "workspaces.html", ctx, workspaces=[ctx.who.workspace])


async def workspace(request: Request) -> Response:
    ctx = await signed_in(request)
    sources = await run_in_threadpool(ctx.svc.store.list_sources, ctx.who.workspace.id)
    return render(request, "workspace.html", ctx, sources=sources)


# -- the catalog -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Described:
    """A catalog destination as a result panel says what it is."""

    dest: CatalogDestination
    modes: list[str]
    source_types: list[str]
    needs: list[str]

    @classmethod
    def of(cls, d: CatalogDestination) -> Described:
        modes = []
        dev = [p for p, on in (("web", d.device_web), ("mobile", d.device_mobile)) if on]
        cloud = [p for p, on in (("web", d.cloud_web), ("mobile", d.cloud_mobile),
                                 ("server", d.cloud_server)) if on]
        if dev:
            modes.append(f"Device mode ({', '.join(dev)})")
        if cloud:
            modes.append(f"Cloud mode ({', '.join(cloud)})")
        types = [t for t in ("web", "ios", "android", "server", "project")
                 if any(d.supports(t, m) for m in CONNECTION_MODES)]
        needs = [s.label for s in d.settings.values() if s.required]
        return cls(d, modes, types, needs)


def _search(svc: Service, q: str) -> tuple[list[Described], int]:
    found = svc.catalog.search(q)
    return [Described.of(d) for d in found[:SEARCH_LIMIT]], len(found)


def _catalog_dest(svc: Service, slug: str) -> CatalogDestination:
    found = svc.catalog.find(slug)
    if found is None:
        raise NotFound(f"catalog destination {slug[:100]!r} not found")
    return found


async def catalog(request: Request) -> Response:
    ctx = await signed_in(request)
    q = request.query_params.get("q", "")[:200]
    results, total = _search(ctx.svc, q)
    return render(request, "catalog.html", ctx, q=q, results=results, total=total,
                  link=f"{BASE}/w/{ctx.ws}/catalog/", source=None, blocked={})


async def catalog_item(request: Request) -> Response:
    ctx = await signed_in(request)
    d = _catalog_dest(ctx.svc, request.path_params["slug"])
    return render(request, "catalog_item.html", ctx, item=Described.of(d))


def addable_modes(svc: Service, source: Source, existing: list[Instance],
                  dest: CatalogDestination) -> tuple[list[str], str]:
    """The connection modes a new instance of ``dest`` may take on ``source`` — the rules'
    own answer for the source's instances plus one more — and, when none, the rule's message."""
    modes: list[str] = []
    why = ""
    taken = {i.display_name.strip().casefold() for i in existing}
    name = dest.name
    while name.casefold() in taken:
        name += " (new)"
    for mode in CONNECTION_MODES:
        candidate = Instance(id="-new-", catalog_slug=dest.slug, display_name=name,
                             connection_mode=mode, enabled=False)  # type: ignore[arg-type]
        try:
            check_source(source, [*existing, candidate], svc.catalog, svc.limits)
        except InvalidArgument as exc:
            why = why or exc.message
            continue
        modes.append(mode)
    return modes, why


def _copyable(svc: Service, ws_id: int, dest: CatalogDestination
              ) -> list[tuple[str, str]]:
    """``(value, label)`` of every instance of ``dest`` in the workspace: where settings may
    be copied from."""
    out = []
    sources = svc.store.list_sources(ws_id)
    by_source = svc.store.instances_of([s.id for s in sources])
    for s in sources:
        for inst in by_source[s.id]:
            if inst.catalog_slug == dest.slug:
                out.append((f"{s.slug}/{inst.id}", f"{inst.display_name} — {s.name}"))
    return out


@dataclass
class Choice:
    source: Source
    modes: list[str]
    why: str
    first: bool


def _choices(svc: Service, ws_id: int, dest: CatalogDestination) -> list[Choice]:
    sources = svc.store.list_sources(ws_id)
    by_source = svc.store.instances_of([s.id for s in sources])
    out = []
    for s in sources:
        modes, why = addable_modes(svc, s, by_source[s.id], dest)
        first = not any(i.catalog_slug == dest.slug for i in by_source[s.id])
        out.append(Choice(s, modes, why, first))
    return out


def _configure_page(request: Request, ctx: Ctx, dest: CatalogDestination,
                    source: Source | None, values: dict[str, str],
                    errors: FieldErrors, status: int = 200) -> Response:
    svc = ctx.svc
    if source is None:
        choices = _choices(svc, ctx.who.workspace.id, dest)
    else:
        modes, why = addable_modes(svc, source, svc.instances(source), dest)
        first = not any(i.catalog_slug == dest.slug for i in svc.instances(source))
        choices = [Choice(source, modes, why, first)]
    return render(request, "configure.html", ctx, status=status, item=Described.of(dest),
                  source=source, choices=choices, values=values, errors=errors,
                  copyable=_copyable(svc, ctx.who.workspace.id, dest), mode_label=MODE_LABEL)


async def catalog_configure(request: Request) -> Response:
    ctx = await signed_in(request)
    d = _catalog_dest(ctx.svc, request.path_params["slug"])
    return await run_in_threadpool(_configure_page, request, ctx, d, None, {}, FieldErrors())


async def source_add(request: Request) -> Response:
    ctx = await signed_in(request)
    source = await _source(ctx, request)
    q = request.query_params.get("q", "")[:200]

    def page() -> Response:
        results, total = _search(ctx.svc, q)
        existing = ctx.svc.instances(source)
        blocked = {r.dest.slug: why for r in results
                   for modes, why in [addable_modes(ctx.svc, source, existing, r.dest)]
                   if not modes}
        return render(request, "catalog.html", ctx, q=q, results=results, total=total,
                      link=f"{BASE}/w/{ctx.ws}/s/{source.slug}/add/", source=source,
                      blocked=blocked)

    return await run_in_threadpool(page)


async def source_add_item(request: Request) -> Response:
    ctx = await signed_in(request)
    source = await _source(ctx, request)
    d = _catalog_dest(ctx.svc, request.path_params["slug"])
    return await run_in_threadpool(_configure_page, request, ctx, d, source, {},
                                   FieldErrors())


async def create_instance(request: Request) -> Response:
    """Confirm Source (from the catalog) or Configure (from a source): a new, disabled
    instance, its settings optionally copied from another instance of the destination."""
    ctx, form = await posted(request)
    svc = ctx.svc
    d = _catalog_dest(svc, request.path_params["slug"])
    fixed = request.path_params.get("src")
    src_slug = fixed or form.get("source")
    errors = FieldErrors()
    values = form.all()

    def attempt() -> Response:
        source = None
        try:
            if not src_slug:
                errors.add("source", "Select the source to connect.")
                raise _Refused()
            source = svc.source(ctx.ws, src_slug)
            mode = form.get("connection_mode")
            if mode not in CONNECTION_MODES:
                errors.add("connection_mode", "Choose a connection mode.")
                raise _Refused()
            copy_from = None
            if form.get("copy_from"):
                c_src, _, c_id = form.get("copy_from").partition("/")
                copy_from = svc.instance(svc.source(ctx.ws, c_src), c_id)
            name = form.get("display_name").strip()
            spec = InstanceSpec(destination=d.slug, connection_mode=mode, enabled=False,
                                display_name=name or None)
            inst, result = svc.add_instance(source, spec, copy_from)
        except _Refused:
            return _configure_page(request, ctx, d, source if fixed else None, values, errors,
                                   400)
        except PublisherError as exc:
            if exc.http_status >= 500:
                raise
            place(exc, errors, source_field="source")
            return _configure_page(request, ctx, d, source if fixed else None, values, errors,
                                   exc.http_status)
        return see_other(f"{BASE}/w/{ctx.ws}/s/{source.slug}/d/{inst.id}",
                         _published(result))

    return await run_in_threadpool(attempt)


class _Refused(Exception):
    """A form error found before the write path was called (already in ``errors``)."""


def _published(result: PublishResult) -> dict[str, Any]:
    return {"published": result.version if result.changed else 0,
            "pending": int(result.pending)}


# -- sources ---------------------------------------------------------------------------------

async def _source(ctx: Ctx, request: Request) -> Source:
    return await run_in_threadpool(ctx.svc.source, ctx.ws, request.path_params["src"])


def _edge_url() -> str:
    try:
        edge = EdgeSettings.from_env()
    except Exception:  # (the publisher already refused bad EDGE_* values at start)
        return "http://127.0.0.1:8080"
    host = "127.0.0.1" if edge.host in ("0.0.0.0", "::", "") else edge.host
    return f"http://{host}:{edge.port}"


def _pretty(raw: bytes) -> list[str]:
    text = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    return text.decode().splitlines(keepends=True)


def source_page_data(svc: Service, ws_id: int, source: Source, a: str | None,
                     b: str | None) -> dict[str, Any]:
    """Everything the source page shows (also what bench/webapp.py times)."""
    instances = svc.instances(source)
    status = svc.status(source)
    bundles = svc.store.list_bundles(source.id)
    current = svc.store.current_bundle(source.id)
    catalog_names: dict[str, str] = {}
    for inst in instances:
        found = svc.catalog.find(inst.catalog_slug)
        catalog_names[inst.catalog_slug] = found.name if found else inst.catalog_slug
    diff: list[str] | None = None
    diff_error = ""
    if a and b:
        by_version = {str(x.version): x for x in bundles}
        if a in by_version and b in by_version:
            diff = list(difflib.unified_diff(
                _pretty(by_version[a].json), _pretty(by_version[b].json),
                fromfile=f"version {a}", tofile=f"version {b}"))
        else:
            diff_error = f"pick two kept versions ({', '.join(by_version)})"
    edge = _edge_url()
    return {
        "source": source, "instances": instances, "pub": status, "bundles": bundles,
        "current": current, "catalog_names": catalog_names, "diff": diff,
        "diff_error": diff_error, "a": a or "", "b": b or "",
        "pick_a": a or (str(bundles[-2].version) if len(bundles) > 1 else ""),
        "pick_b": b or (str(bundles[-1].version) if bundles else ""),
        "document": current.json.decode() if current else "",
        "edge": edge, "settings_url": f"{edge}/v1/projects/{source.write_key}/settings",
    }


async def source_page(request: Request) -> Response:
    ctx = await signed_in(request)
    source = await _source(ctx, request)
    q = request.query_params
    data = await run_in_threadpool(source_page_data, ctx.svc, ctx.who.workspace.id, source,
                                   q.get("a"), q.get("b"))
    return render(request, "source.html", ctx, flash=_flash(request), **data)


def _flash(request: Request) -> str:
    q = request.query_params
    if "published" not in q:
        return ""
    if q.get("pending") == "1":
        return "Saved. Redis could not be written: the new version is pending and will be " \
               "published when Redis answers."
    v = q.get("published", "0")
    return f"Saved and published: version {v}." if v not in ("", "0") else \
        "Saved. The settings document did not change, so no new version was needed."


async def rollback(request: Request) -> Response:
    ctx, form = await posted(request)
    source = await _source(ctx, request)
    text = form.get("version")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) < 2**63:
        raise InvalidArgument(f"version {text[:20]!r} is not a version number",
                              code="bad_version")
    result = await run_in_threadpool(ctx.svc.rollback, source, int(text))
    return see_other(f"{BASE}/w/{ctx.ws}/s/{source.slug}", _published(result))


# -- a destination instance: the settings page -------------------------------------------------

def _setting_rows(dest: CatalogDestination, inst: Instance, values: dict[str, str] | None,
                  errors: FieldErrors) -> list[dict[str, Any]]:
    rows = []
    for spec in dest.settings.values():
        key = setting_field(spec.name)
        kind = input_kind(spec)
        stored = inst.settings.get(spec.name)
        if values is not None and kind != "secret":
            if kind == "checkbox":
                value: Any = key in values
            else:
                value = values.get(key, "")
        elif kind == "checkbox":
            value = bool(stored if stored is not None else spec.default)
        else:
            value = "" if kind == "secret" else shown_value(spec, stored)
        rows.append({"spec": spec, "key": key, "kind": kind, "value": value,
                     "is_set": spec.name in inst.settings,
                     "masked": masked(stored) if spec.name in inst.settings else "",
                     "error": errors.get(key),
                     "shown": ("" if stored is None else masked(stored) if spec.secret
                               else shown_value(spec, stored))})
    return rows


def _instance_page(request: Request, ctx: Ctx, source: Source, inst: Instance,
                   values: dict[str, str] | None = None, errors: FieldErrors | None = None,
                   status: int = 200) -> Response:
    svc = ctx.svc
    errors = errors or FieldErrors()
    dest = svc.catalog.get(inst.catalog_slug)
    modes = [m for m in CONNECTION_MODES if dest.supports(source.type, m)]
    if inst.connection_mode not in modes:
        modes.append(inst.connection_mode)
    filters = []
    for f in inst.filters:
        rule = filters_mod.routing_rules(dest.integrations_key, [f]) if f.enabled else []
        filters.append({"f": f, "rule": orjson.dumps(rule[0], option=orjson.OPT_INDENT_2)
                        .decode() if rule else ""})
    return render(request, "instance.html", ctx, status=status, source=source, inst=inst,
                  dest=dest, rows=_setting_rows(dest, inst, values, errors), errors=errors,
                  values=values or {}, modes=modes, mode_label=MODE_LABEL, filters=filters,
                  flash=_flash(request))


async def _instance(ctx: Ctx, request: Request) -> tuple[Source, Instance]:
    source = await _source(ctx, request)
    inst = await run_in_threadpool(ctx.svc.instance, source, request.path_params["dest"])
    return source, inst


async def instance_page(request: Request) -> Response:
    ctx = await signed_in(request)
    source, inst = await _instance(ctx, request)
    return await run_in_threadpool(_instance_page, request, ctx, source, inst)


def _instance_url(ctx: Ctx, source: Source, inst_id: str) -> str:
    return f"{BASE}/w/{ctx.ws}/s/{source.slug}/d/{inst_id}"


async def instance_enabled(request: Request) -> Response:
    ctx, form = await posted(request)
    source, inst = await _instance(ctx, request)
    fields = {"enabled": form.get("enabled") == "1"}
    return await run_in_threadpool(_update_instance, request, ctx, source, inst, fields, None,
                                   None, FieldErrors(), error_field="enabled")


def _update_instance(request: Request, ctx: Ctx, source: Source, inst: Instance,
                     fields: dict[str, Any], patch: dict[str, Any] | None,
                     values: dict[str, Any] | None, errors: FieldErrors,
                     error_field: str | None = None) -> Response:
    """One ``Service.update_instance``: back to the instance's page, or that page again with
    the refusal beside its field (``error_field`` as well, when given)."""
    try:
        _, result = ctx.svc.update_instance(source, inst.id, fields, patch)
    except PublisherError as exc:
        if exc.http_status >= 500:
            raise
        place(exc, errors)
        if error_field is not None:
            errors.add(error_field, exc.message)
        return _instance_page(request, ctx, source, inst, values, errors, exc.http_status)
    return see_other(_instance_url(ctx, source, inst.id), _published(result))


async def instance_settings(request: Request) -> Response:
    ctx, form = await posted(request)
    source, inst = await _instance(ctx, request)
    dest = ctx.svc.catalog.get(inst.catalog_slug)
    errors = FieldErrors()
    values = form.all()
    patch = read_settings(dest, form, inst.settings, errors)
    fields: dict[str, Any] = {}
    name = form.get("display_name").strip()
    if name != inst.display_name:
        fields["display_name"] = name
    mode = form.get("connection_mode", inst.connection_mode)
    if mode != inst.connection_mode:
        fields["connection_mode"] = mode
    if errors:
        return await run_in_threadpool(_instance_page, request, ctx, source, inst, values,
                                       errors, 400)

    return await run_in_threadpool(_update_instance, request, ctx, source, inst, fields, patch,
                                   values, errors)


async def instance_delete(request: Request) -> Response:
    ctx, _ = await posted(request)
    source, inst = await _instance(ctx, request)
    result = await run_in_threadpool(ctx.svc.delete_instance, source, inst.id)
    return see_other(f"{BASE}/w/{ctx.ws}/s/{source.slug}", _published(result))


# -- filters -----------------------------------------------------------------------------------

def _filter_page(request: Request, ctx: Ctx, source: Source, inst: Instance,
                 values: dict[str, str], errors: FieldErrors, fid: str | None,
                 status: int = 200) -> Response:
    dest = ctx.svc.catalog.get(inst.catalog_slug)
    return render(request, "filter.html", ctx, status=status, source=source, inst=inst,
                  dest=dest, values=values, errors=errors, fid=fid, actions=ACTIONS)


async def filter_new(request: Request) -> Response:
    ctx = await signed_in(request)
    source, inst = await _instance(ctx, request)
    values = {"title": "", "description": "", "if": "", "action": "drop_event",
              "enabled": "1", "percent": "", "fields": ""}
    return _filter_page(request, ctx, source, inst, values, FieldErrors(), None)


async def filter_edit(request: Request) -> Response:
    ctx = await signed_in(request)
    source, inst = await _instance(ctx, request)
    fid = request.path_params["fid"]
    f = next((f for f in inst.filters if f.id == fid), None)
    if f is None:
        raise NotFound(f"filter {fid[:100]!r} not found on destination {inst.id!r}")
    return _filter_page(request, ctx, source, inst, filter_form(filter_dict(f)), FieldErrors(),
                        fid)


async def filter_save(request: Request) -> Response:
    ctx, form = await posted(request)
    source, inst = await _instance(ctx, request)
    fid = request.path_params.get("fid")
    errors = FieldErrors()
    raw = read_filter(form, errors)
    values = form.all()
    if errors:
        return _filter_page(request, ctx, source, inst, values, errors, fid, 400)

    def attempt() -> Response:
        try:
            if fid is None:
                _, result = ctx.svc.add_filter(source, inst.id, raw)
            else:
                _, result = ctx.svc.update_filter(source, inst.id, fid, raw)
        except PublisherError as exc:
            if exc.http_status >= 500:
                raise
            place(exc, errors)
            return _filter_page(request, ctx, source, inst, values, errors, fid,
                                exc.http_status)
        return see_other(_instance_url(ctx, source, inst.id), _published(result))

    return await run_in_threadpool(attempt)


async def filter_enabled(request: Request) -> Response:
    ctx, form = await posted(request)
    source, inst = await _instance(ctx, request)
    _, result = await run_in_threadpool(ctx.svc.update_filter, source, inst.id,
                                        request.path_params["fid"],
                                        {"enabled": form.get("enabled") == "1"})
    return see_other(_instance_url(ctx, source, inst.id), _published(result))


async def filter_delete(request: Request) -> Response:
    ctx, _ = await posted(request)
    source, inst = await _instance(ctx, request)
    result = await run_in_threadpool(ctx.svc.delete_filter, source, inst.id,
                                     request.path_params["fid"])
    return see_other(_instance_url(ctx, source, inst.id), _published(result))


# (paths inside the app, which is mounted at BASE)
W = "/w/{ws}"
S = W + "/s/{src}"
D = S + "/d/{dest}"
ROUTES = [
    Route("/", home),
    Route("/login", login_form),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route(W, workspace),
    Route(W + "/catalog", catalog),
    Route(W + "/catalog/{slug}", catalog_item),
    Route(W + "/catalog/{slug}/configure", catalog_configure),
    Route(W + "/catalog/{slug}/configure", create_instance, methods=["POST"]),
    Route(S, source_page),
    Route(S + "/rollback", rollback, methods=["POST"]),
    Route(S + "/add", source_add),
    Route(S + "/add/{slug}", source_add_item),
    Route(S + "/add/{slug}", create_instance, methods=["POST"]),
    Route(D, instance_page),
    Route(D + "/enabled", instance_enabled, methods=["POST"]),
    Route(D + "/settings", instance_settings, methods=["POST"]),
    Route(D + "/delete", instance_delete, methods=["POST"]),
    Route(D + "/filters/new", filter_new),
    Route(D + "/filters/new", filter_save, methods=["POST"]),
    Route(D + "/filters/{fid}", filter_edit),
    Route(D + "/filters/{fid}", filter_save, methods=["POST"]),
    Route(D + "/filters/{fid}/enabled", filter_enabled, methods=["POST"]),
    Route(D + "/filters/{fid}/delete", filter_delete, methods=["POST"]),
]
