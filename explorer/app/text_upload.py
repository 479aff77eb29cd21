"""Your own text from the browser, for the text-folder datasets: a .txt file or a .zip of them, checked by
explorer.uploads (UTF-8, size caps, names, zip bombs) and saved under the store home's uploads/text, one of the
folders the app may read (explorer/app/roots.py). No Streamlit here: the Train page lays it out."""
from __future__ import annotations

from ..store import Store
from ..uploads import describe_text_folder, save_upload
from .roots import check_data_root

TYPES = ["txt", "zip"]


def save_text_upload(store: Store, filename: str, data: bytes, dataset: str = "text-folder") -> tuple[str, str]:
    """Check and save an uploaded text; returns the Data folder to fill in and a sentence on what the text reader
    makes of it. Raises UploadError (the message says what was wrong and what to upload) and leaves nothing
    behind when refused."""
    folder = save_upload(filename, data, "text", store.home)
    check_data_root(folder, dataset, store.home)
    seen = describe_text_folder(folder)
    skipped = f", {seen['skipped']} files skipped ({seen['skipped_files'][0][1]}, ...)" if seen["skipped"] else ""
    return str(folder), (f"{filename}: {seen['files']} text file{'s' * (seen['files'] != 1)}, "
                         f"{seen['chars']:,} characters{skipped}")
