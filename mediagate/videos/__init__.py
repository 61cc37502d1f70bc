"""The Videos API's use cases: `service` (VideoService, the one owner of create, remix,
retrieve, list, delete and content), `spec` (a request and its one validation), `records` (our
VideoJob record: its id, how the upstream's answer moves it, how a client sees it) and
`reference` (an input_reference image checked and fitted to the video's size)."""
