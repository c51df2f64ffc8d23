"""The catalogue a node serves: the shipped records, the operator's file, local weights and upstream routes.

API nodes, workers and `vidgate catalog check` build it the same way, so a setting that cannot work stops
every one of them at start with the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidgate.catalog.models import Catalog, CatalogError, load_catalog
from vidgate.catalog.pricing import PriceTable
from vidgate.engines.diffusers_models import BindingError, bind_catalog
from vidgate.gateway.config import GatewayConfigError, Route, route_catalog, routes_for
from vidgate.settings import Settings

# Every error that means "these settings cannot be served"; each names the setting, model or path.
STARTUP_ERRORS = (CatalogError, BindingError, GatewayConfigError)


@dataclass(frozen=True)
class ServedCatalog:
    catalog: Catalog
    prices: PriceTable
    routes: dict[str, Route]


def served_catalog(settings: Settings) -> ServedCatalog:
    catalog = bind_catalog(load_catalog(settings.catalog_file), settings.diffusers_models)
    routes = routes_for(catalog, settings.upstreams)
    return ServedCatalog(route_catalog(catalog, routes), PriceTable.load(settings.price_file), routes)
