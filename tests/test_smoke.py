from registry_local.config import StoreSettings
from registry_local.transfer.imagebuild import sample_image

from .support.harness import StartCache, fetch, pull_image, seed
from .support.s3proxy import S3Proxy


async def test_pull_sample(
    start_cache: StartCache, direct_store: StoreSettings, s3proxy: S3Proxy
) -> None:
    image = sample_image()
    await seed(direct_store, "library/hello", "latest", image)
    cache = await start_cache()
    status, _, _ = await fetch(cache.url + "/v2/")
    assert status == 200
    got = await pull_image(cache.url, "library/hello", "latest")
    assert set(got) == {str(d) for d in [*image.blobs, *image.manifests]}
    assert all(n == 1 for n in s3proxy.blob_gets().values())
