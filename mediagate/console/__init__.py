"""The console (`/console`): the web pages where a platform team and its teams see what was
made, what it cost and what failed, manage keys, and try a model (issue 26).

Server-rendered (Jinja2 templates, a little vendored htmx and uPlot), served by the gateway
itself from this package's files. Its data is the admin API's: the same records, reads and
role rules (mediagate.http.admin*), shown as pages. `web` is what the pages share; each page is
a module with its own router (`pages`), gathered by `routers()`.
"""

from __future__ import annotations

from mediagate.http.routes import Routes


def routers() -> tuple[Routes, ...]:
    """Every console route, the sign-in's first (its static files with them)."""
    from mediagate.console import (
        auth,
        batches,
        export,
        gallery,
        health,
        jobs,
        keys,
        models,
        oidc,
        overview,
        playground,
        requests,
    )

    return (
        auth.pages,
        oidc.pages,
        overview.pages,
        gallery.pages,
        requests.pages,
        jobs.pages,
        batches.pages,
        keys.pages,
        models.pages,
        playground.pages,
        health.pages,
        export.pages,
    )
