from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse

from workfleet.backend.datasets import DatasetService
from workfleet.backend.deps import Fetcher, Reader, Submitter
from workfleet.domain.datasets import Dataset
from workfleet.operations.timeframes import SYMBOL_PATTERN
from workfleet.protocol import DatasetsPage, DatasetView

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
Symbol = Annotated[str, Path(pattern=SYMBOL_PATTERN)]
MAX_UPLOAD_BYTES = 1 << 30


async def _service(request: Request) -> DatasetService:
    service: DatasetService = request.app.state.datasets
    return service


Datasets = Annotated[DatasetService, Depends(_service)]


def _view(dataset: Dataset) -> DatasetView:
    return DatasetView.model_validate(dataset, from_attributes=True)


@router.put(
    "/{symbol}/{timeframe}",
    response_model=DatasetView,
    max_body_size=MAX_UPLOAD_BYTES,
    openapi_extra={"requestBody": {"content": {"text/csv": {}}, "required": True}},
)
async def put_dataset(
    symbol: Symbol, timeframe: str, request: Request, datasets: Datasets, _: Submitter
) -> DatasetView:
    """CSV `timestamp,open,high,low,close,volume`; validated, then the current version."""
    return _view(await datasets.put(symbol, timeframe, await request.body()))


@router.get("", response_model=DatasetsPage)
async def list_datasets(datasets: Datasets, _: Reader) -> DatasetsPage:
    return DatasetsPage(items=[_view(d) for d in await datasets.list()])


@router.get("/{symbol}/{timeframe}", response_model=DatasetView)
async def get_dataset(symbol: str, timeframe: str, datasets: Datasets, _: Fetcher) -> DatasetView:
    return _view(await datasets.get(symbol, timeframe))


@router.get("/{symbol}/{timeframe}/content", response_class=FileResponse)
async def get_content(symbol: str, timeframe: str, datasets: Datasets, _: Fetcher) -> FileResponse:
    """The canonical CSV; `X-Content-SHA256` says what its bytes must hash to."""
    dataset = await datasets.get(symbol, timeframe)
    return FileResponse(
        datasets.path_of(dataset),
        media_type="text/csv",
        headers={"X-Content-SHA256": dataset.sha256},
    )
