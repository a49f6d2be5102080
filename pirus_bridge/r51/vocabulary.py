"""The values COUNTER R5.1 permits in an Item Report, verbatim from the Code of Practice and the
COUNTER API description (``COUNTER_API.json``: ``IR_Attribute_Performance``,
``IR_Report_Filters``, ``IR_Report_Attributes``, ``Item_ID``, ``Organization_ID``)."""

from __future__ import annotations

import re

RELEASE = "5.1"
REPORT_ID = "IR"
REPORT_NAME = "Item Report"
REPORT_PATH = "/r51/reports/ir"
GLOBAL_CUSTOMER_ID = "0000000000000000"  # "The World" (CoP 3.2.1, 8.2)
GLOBAL_INSTITUTION_NAME = "The World"

# CoP Table 3.p, the Data_Types an Item Report may carry.
DATA_TYPES = (
    "Article", "Audiovisual", "Book_Segment", "Conference_Item", "Database_Full_Item", "Dataset",
    "Image", "Interactive_Resource", "Multimedia", "News_Item", "Other", "Patent",
    "Reference_Item", "Report", "Software", "Sound", "Standard", "Thesis_or_Dissertation",
    "Unspecified",
)  # fmt: skip
ACCESS_TYPES = ("Controlled", "Open", "Free_To_Read")  # CoP Table 3.u
ACCESS_METHODS = ("Regular", "TDM")  # CoP Table 3.v
# The IR's Metric_Types in the order COUNTER's sample reports list them.
METRIC_TYPES = (
    "Limit_Exceeded", "No_License", "Total_Item_Investigations", "Total_Item_Requests",
    "Unique_Item_Investigations", "Unique_Item_Requests",
)  # fmt: skip
# What pirus-bridge counts (the others are access denials, which an open repository has none of).
COUNTED_METRICS = (
    "Total_Item_Investigations", "Total_Item_Requests", "Unique_Item_Investigations",
    "Unique_Item_Requests",
)  # fmt: skip
# NISO RP-8-2008 Journal Article Versions (Article_Version).
ARTICLE_VERSIONS = ("AO", "SMUR", "AM", "P", "VoR", "CVoR", "EVoR")

# Attributes_To_Show for the IR (CoP Table 4.p "C" elements): the ones served here, then the
# common extensions (CoP 11.5), which are not.
ATTRIBUTES = ("Authors", "Publication_Date", "Article_Version", "YOP", "Access_Type",
              "Access_Method")
EXTENSION_ATTRIBUTES = ("Institution_Name", "Customer_ID", "Country_Name", "Country_Code",
                        "Subdivision_Name", "Subdivision_Code", "Attributed")
# Report_Attributes Granularity: the CoP spells it Totals; the R5.1 API description first said
# Total, and was corrected to Totals (Project-Counter/cop5 #293). Both are read; Totals is written.
GRANULARITY_MONTH, GRANULARITY_TOTALS = "Month", "Totals"

# Item_ID and Organization_ID patterns.
DOI_PATTERN = re.compile(r"^10\.[1-9][0-9]{2}[0-9.]*/.+$")
PROPRIETARY_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_./]{1,17}:.+")
PLATFORM_ID_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_./]{1,17}$")
# The COUNTER Registry moved from registry.projectcounter.org to registry.countermetrics.org.
REGISTRY_PATTERN = re.compile(
    r"^https://registry\.(projectcounter|countermetrics)\.org/(platform|usage-data-host)/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
