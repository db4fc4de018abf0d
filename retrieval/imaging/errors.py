"""The one error decoding raises: it names the file and, for DICOM, the tag at fault."""


class ImageDecodeError(ValueError):
    """An image, volume or DICOM file that cannot be turned into pixels."""
