"""Typed dependencies shared by the query service's routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from exporter.delivery import Delivery
from exporter.privacy import Privacy
from homepot_foundation.settings import Settings
from query_api.databases import Databases


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_databases(request: Request) -> Databases:
    """The primary (writes) and the read engine; ``reading.transaction`` picks one."""
    return request.app.state.databases


def get_delivery(request: Request) -> Delivery:
    """The one writer path into the tables (OTLP sink and intake share it)."""
    return request.app.state.delivery


def get_privacy(request: Request) -> Privacy:
    """The privacy policy of the service's pipeline (the OTLP sink maps with it)."""
    return request.app.state.pipeline.privacy


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabasesDep = Annotated[Databases, Depends(get_databases)]
DeliveryDep = Annotated[Delivery, Depends(get_delivery)]
PrivacyDep = Annotated[Privacy, Depends(get_privacy)]
